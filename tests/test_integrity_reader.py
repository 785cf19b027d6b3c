"""No silent path from a damaged LeRobot dataset to a sample (issue 35), checked without Ray.

Each test damages a tiny dataset written by `lerobot_fixtures` and asserts the
damage is either quarantined (the episode rejected naming the file, every other
episode's samples exact) or fails the dataset naming the file and the field.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from damage import (
    drop_column,
    drop_metadata_row,
    drop_video_frame,
    set_v3_meta,
    set_value,
    v3_meta,
)
from integrity_build import read_build, same_sample
from lerobot_fixtures import (
    frame_value,
    write_v3_dataset,
    write_v21_dataset,
    write_video,
)

from stages import video
from stages.lerobot import DatasetError, LeRobotDataset
from stages.lerobot_audit import audit

CAM = "observation.images.front"


def _write(layout: str, root, lengths=(6, 7, 5), **kw):
    if layout == "v3":
        return write_v3_dataset(root, lengths=lengths, cameras=(CAM,), episodes_per_file=2, **kw)
    return write_v21_dataset(root, lengths=lengths, cameras=(CAM,), **kw)


@pytest.mark.parametrize("decoder", ["decord", "pyav"])
def test_a_frame_missing_mid_video_fails_naming_file_and_time(tmp_path, decoder):
    path = tmp_path / "gap.mp4"
    write_video(path, [frame_value(i) for i in range(12)], 10, 32)
    drop_video_frame(path, 5)
    assert video.probe(path).num_frames == 11
    np.testing.assert_array_equal(  # the frames around the gap still read exactly
        [round((f.mean() - 10) / 5) for f in video.read_frames(path, np.array([0.4, 0.6]), decoder)], [4, 6])
    with pytest.raises(video.VideoError, match=r"no frame at 0\.5000s") as err:
        video.read_frames(path, np.arange(12) / 10, decoder=decoder)
    assert str(path) in str(err.value) and "frame period 0.1000s" in str(err.value)  # spacing, not average


@pytest.mark.parametrize("codec", ["h264", "av1"])
def test_v3_episode_with_a_video_gap_is_rejected_naming_file_and_time(tmp_path, codec):
    _write("v3", tmp_path, lengths=(6, 7), codec=codec)
    mp4 = tmp_path / f"videos/{CAM}/chunk-000/file-000.mp4"
    drop_video_frame(mp4, 6 + 3)  # episode 1, frame 3 (0.3 s into it, 0.9 s into the file)
    clean_dir = tmp_path.parent / (tmp_path.name + "_clean")
    _write("v3", clean_dir, lengths=(6, 7), codec=codec)
    samples, rejects = read_build(tmp_path)
    assert [r["episode"] for r in rejects] == [1]
    assert str(mp4) in rejects[0]["reason"] and "0.9000s" in rejects[0]["reason"]
    clean, _ = read_build(clean_dir)
    assert set(samples) == {k for k in clean if k.startswith("0/")}
    assert all(same_sample(samples[k], clean[k]) for k in samples)


@pytest.mark.parametrize("layout", ["v3", "v21"])
def test_episode_missing_from_metadata_is_quarantined_naming_file(tmp_path, layout):
    _write(layout, tmp_path)
    meta = drop_metadata_row(tmp_path, 1)
    rejects = audit(LeRobotDataset(tmp_path))
    data = "file-000.parquet" if layout == "v3" else "episode_000001.parquet"
    assert [r["episode"] for r in rejects] == [1], rejects
    assert data in rejects[0]["reason"] and "7 rows" in rejects[0]["reason"]
    assert str(meta if layout == "v21" else meta.parent.parent) in rejects[0]["reason"]


@pytest.mark.parametrize("layout", ["v3", "v21"])
def test_totals_in_info_that_disagree_fail_naming_the_field(tmp_path, layout):
    _write(layout, tmp_path)
    info = json.loads((tmp_path / "meta/info.json").read_text())
    info["total_frames"] += 4  # frames the dataset should hold but nothing lists
    (tmp_path / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match="total_frames is 22") as err:
        audit(LeRobotDataset(tmp_path))
    assert "info.json" in str(err.value)


@pytest.mark.parametrize("layout", ["v3", "v21"])
def test_non_finite_action_names_the_parquet_file(tmp_path, layout):
    _write(layout, tmp_path)
    path = set_value(tmp_path, 1, "action", 2, float("nan"))
    _, rejects = read_build(tmp_path)
    assert [r["episode"] for r in rejects] == [1]
    assert str(path) in rejects[0]["reason"] and "first at frame 2" in rejects[0]["reason"]


def test_v3_video_range_shorter_than_rows_names_the_metadata_fields(tmp_path):
    _write("v3", tmp_path)
    set_v3_meta(tmp_path, 1, f"videos/{CAM}/to_timestamp", 1.2)  # from 0.6: 6 frames, 7 rows
    _, rejects = read_build(tmp_path)
    assert [r["episode"] for r in rejects] == [1]
    reason = rejects[0]["reason"]
    assert "meta/episodes" in reason and f"videos/{CAM}/to_timestamp" in reason and "from_timestamp" in reason
    assert "spans 6 frames" in reason and "length is 7" in reason
    assert "file-000.mp4" not in reason  # the intact mp4 is not blamed


def test_v3_missing_required_column_fails_once_when_opened(tmp_path):
    _write("v3", tmp_path)
    path = tmp_path / "data/chunk-000/file-001.parquet"
    drop_column(path, "observation.state")
    dataset = LeRobotDataset(tmp_path)  # opening reads metadata only
    with pytest.raises(DatasetError, match=r"missing required columns \['observation.state'\]") as err:
        audit(dataset)
    assert str(path) in str(err.value)
    assert v3_meta(tmp_path).exists()
