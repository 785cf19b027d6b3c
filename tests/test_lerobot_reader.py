"""LeRobot reader: v3.0 and v2.1 read back exactly; bad input fails naming the file or key."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stages.lerobot import DatasetError, LeRobotDataset
from tests.lerobot_fixtures import (
    LIBERO_CAMERAS,
    value_to_index,
    write_v3_dataset,
    write_v21_dataset,
)


@pytest.fixture(scope="module")
def v3(tmp_path_factory):
    root = tmp_path_factory.mktemp("v3")
    return root, write_v3_dataset(root)


@pytest.fixture(scope="module")
def v21(tmp_path_factory):
    root = tmp_path_factory.mktemp("v21")
    return root, write_v21_dataset(root)


@pytest.fixture
def fresh_v21(tmp_path):
    """A private copy to damage."""
    return tmp_path, write_v21_dataset(tmp_path)


@pytest.fixture
def fresh_v3(tmp_path):
    return tmp_path, write_v3_dataset(tmp_path)


def _check_images(ds, exp, frame_picks=(0, 4, 4, -1)):
    for ep in ds.episodes:
        picks = np.array([p % ep.length for p in frame_picks])
        for slot, camera in enumerate(exp.cameras):
            images = ds.read_images(ep, camera, picks)
            assert images.dtype == np.uint8 and images.shape == (len(picks), 32, 32, 3)
            got = [value_to_index(im.mean(), slot) for im in images]
            assert got == [exp.first_global[ep.index] + p for p in picks], (ep.index, camera)


def _check_rows(ds, exp):
    assert [e.index for e in ds.episodes] == list(range(len(exp.lengths)))
    assert [e.length for e in ds.episodes] == exp.lengths
    assert [e.task for e in ds.episodes] == exp.episode_tasks
    assert [ds.tasks[e.task_index] for e in ds.episodes] == exp.episode_tasks
    assert ds.tasks == exp.tasks
    for ep in ds.episodes:
        frames = ds.frames(ep)
        assert frames.timestamp.dtype == np.float64 and frames.frame_index.dtype == np.int64
        assert np.array_equal(frames.frame_index, np.arange(ep.length))
        np.testing.assert_allclose(frames.timestamp, np.arange(ep.length) / exp.fps, atol=1e-6)
        assert frames.state.dtype == np.float32 and frames.action.dtype == np.float32
        assert np.array_equal(frames.state, exp.states[ep.index])
        assert np.array_equal(frames.action, exp.actions[ep.index])


def test_v3_h264(v3):
    root, exp = v3
    ds = LeRobotDataset(root)
    assert ds.version == "v3.0" and ds.fps == exp.fps and ds.camera_keys == exp.cameras
    assert (ds.state_key, ds.action_key) == ("observation.state", "action")
    _check_rows(ds, exp)
    _check_images(ds, exp)
    assert ds.decoder_counts == {"decord": 2}  # two concatenated video files
    seg = ds.episodes[1].videos[exp.cameras[0]]
    assert seg.path.name == "file-000.mp4" and seg.from_timestamp == pytest.approx(exp.lengths[0] / exp.fps)


def test_v3_reads_each_data_file_once(v3):
    root, exp = v3
    ds = LeRobotDataset(root)
    for ep in ds.episodes:  # episodes 0,1 share file-000; episode 2 is in file-001
        ds.frames(ep)
        ds.frames(ep)
    assert ds.data_file_reads == 2


def test_v3_av1_uses_pyav(tmp_path):
    exp = write_v3_dataset(tmp_path, lengths=(8, 11), codec="av1")
    ds = LeRobotDataset(tmp_path)
    _check_images(ds, exp)
    assert ds.decoder_counts == {"pyav": 1}


@pytest.mark.parametrize("layout", ["named_index", "column"])
def test_v3_tasks_other_layouts(tmp_path, layout):
    exp = write_v3_dataset(tmp_path, lengths=(5, 6), tasks_layout=layout)
    assert "task" in pq.read_schema(tmp_path / "meta/tasks.parquet").names
    assert LeRobotDataset(tmp_path).tasks == exp.tasks


def test_v3_tasks_stored_as_pandas_index(v3):
    root, exp = v3
    assert "__index_level_0__" in pq.read_schema(root / "meta/tasks.parquet").names
    assert LeRobotDataset(root).tasks == exp.tasks


def test_v21_libero_like(v21):
    root, exp = v21
    assert not (root / "meta/stats.json").exists() and (root / "meta/episodes_stats.jsonl").exists()
    ds = LeRobotDataset(root)
    assert ds.version == "v2.1" and ds.camera_keys == LIBERO_CAMERAS
    _check_rows(ds, exp)
    assert ds.frames(ds.episodes[0]).state.shape[1] == 8 and ds.frames(ds.episodes[0]).action.shape[1] == 7
    _check_images(ds, exp)
    assert ds.decoder_counts == {"decord": 4}


def test_camera_selection(v21):
    root, _ = v21
    ds = LeRobotDataset(root, cameras=["observation.images.wrist_image"])
    assert ds.camera_keys == ["observation.images.wrist_image"]
    assert list(ds.episodes[0].videos) == ["observation.images.wrist_image"]
    with pytest.raises(DatasetError, match="observation.images.image"):
        ds.read_images(ds.episodes[0], "observation.images.image", np.array([0]))


def test_unknown_camera_names_key_and_available(v21):
    root, _ = v21
    with pytest.raises(DatasetError, match="observation.images.top") as err:
        LeRobotDataset(root, cameras=["observation.images.top"])
    assert "observation.images.wrist_image" in str(err.value)


def test_frame_index_out_of_episode(v21):
    root, _ = v21
    ds = LeRobotDataset(root)
    ep = ds.episodes[0]
    with pytest.raises(DatasetError, match="frame indices"):
        ds.read_images(ep, ds.camera_keys[0], np.array([ep.length]))


def test_unknown_codebase_version(fresh_v21):
    root, _ = fresh_v21
    info = json.loads((root / "meta/info.json").read_text())
    info["codebase_version"] = "v9.9"
    (root / "meta/info.json").write_text(json.dumps(info))
    with pytest.raises(DatasetError, match="v9.9") as err:
        LeRobotDataset(root)
    assert "info.json" in str(err.value)


def test_missing_info(tmp_path):
    with pytest.raises(DatasetError, match="info.json"):
        LeRobotDataset(tmp_path)


def test_missing_data_parquet(fresh_v21):
    root, _ = fresh_v21
    path = root / "data/chunk-000/episode_000001.parquet"
    path.unlink()
    with pytest.raises(DatasetError, match="episode_000001.parquet"):
        LeRobotDataset(root)


def test_truncated_data_parquet(fresh_v3):
    root, _ = fresh_v3
    path = root / "data/chunk-000/file-001.parquet"
    path.write_bytes(path.read_bytes()[:100])
    ds = LeRobotDataset(root)
    ds.frames(ds.episodes[0])  # file-000 is intact
    with pytest.raises(DatasetError, match="file-001.parquet"):
        ds.frames(ds.episodes[2])


def test_truncated_episodes_metadata(fresh_v3):
    root, _ = fresh_v3
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    path.write_bytes(path.read_bytes()[:-50])
    with pytest.raises(DatasetError, match="meta/episodes/chunk-000/file-000.parquet"):
        LeRobotDataset(root)


def test_missing_mp4(fresh_v3):
    root, exp = fresh_v3
    (root / f"videos/{exp.cameras[0]}/chunk-000/file-001.mp4").unlink()
    ds = LeRobotDataset(root)  # opens: only the episodes in that file are unreadable
    in_file = [e for e in ds.episodes if e.videos[exp.cameras[0]].path.name == "file-001.mp4"]
    assert in_file
    with pytest.raises(DatasetError, match="file-001.mp4"):
        ds.read_images(in_file[0], exp.cameras[0], np.arange(2))
    ds.read_images(ds.episodes[0], exp.cameras[0], np.arange(2))  # the others still read


def test_corrupt_mp4(fresh_v21):
    root, _ = fresh_v21
    path = root / f"videos/chunk-000/{LIBERO_CAMERAS[1]}/episode_000000.mp4"
    path.write_bytes(os.urandom(3000))
    ds = LeRobotDataset(root)
    with pytest.raises(DatasetError, match="episode_000000.mp4"):
        ds.read_images(ds.episodes[0], LIBERO_CAMERAS[1], np.array([0, 1]))


def test_row_count_differs_from_length(fresh_v21):
    root, _ = fresh_v21
    path = root / "meta/episodes.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[1]["length"] += 1
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ds = LeRobotDataset(root)
    with pytest.raises(DatasetError, match="episode_000001.parquet.*episode 1 has 15 rows"):
        ds.frames(ds.episodes[1])


def test_missing_state_key(v21):
    root, _ = v21
    with pytest.raises(DatasetError, match="observation.joints"):
        LeRobotDataset(root, state_key="observation.joints")


def test_fingerprint(fresh_v3, tmp_path_factory):
    root, exp = fresh_v3
    first = LeRobotDataset(root).fingerprint()
    assert LeRobotDataset(root).fingerprint() == first
    os.utime(root / "data/chunk-000/file-000.parquet")  # touched, not changed
    copy = tmp_path_factory.mktemp("copy") / "ds"
    shutil.copytree(root, copy)  # identity is content, not location
    assert LeRobotDataset(root).fingerprint() == first == LeRobotDataset(copy).fingerprint()

    path = root / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    action = table.column("action").to_pylist()
    action[0][0] += 1.0
    column = pa.array(action, type=table.schema.field("action").type)
    table = table.set_column(table.schema.get_field_index("action"), "action", column)
    pq.write_table(table, path)
    assert LeRobotDataset(root).fingerprint() != first
