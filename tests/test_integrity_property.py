"""Property of the reader: one random damage to a random valid dataset is exact or named, never silent.

For a few seeds: a random tiny dataset (v2.1 or v3.0, 2-3 episodes of 4-8
frames, 1-2 cameras, 10 or 15 fps) is read as a build reads it, before and after
one damage (drop a video frame, drop an episode's data rows, drop a metadata
row, truncate a file, flip a byte of a metadata file). The damaged read must
either fail naming the damaged file, or keep every sample it returns identical to
the undamaged read, with each missing episode rejected naming the damaged file.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import damage as d
import numpy as np
import pytest
from integrity_build import read_build, same_sample
from lerobot_fixtures import write_v3_dataset, write_v21_dataset

from stages.lerobot import DatasetError, LeRobotDataset

CAMERAS = ("observation.images.top", "observation.images.wrist")
KINDS = ("drop_frame", "drop_rows", "drop_metadata_row", "truncate", "flip_metadata_byte")


def _dataset(rng: np.random.Generator, root: Path) -> None:
    lengths = tuple(int(n) for n in rng.integers(4, 9, size=int(rng.integers(2, 4))))
    kw = {"lengths": lengths, "cameras": CAMERAS[: int(rng.integers(1, 3))], "fps": int(rng.choice([10, 15]))}
    if rng.random() < 0.5:
        write_v3_dataset(root, episodes_per_file=2, **kw)
    else:
        write_v21_dataset(root, **kw)


def _meta_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "meta").rglob("*") if p.is_file() and "stats" not in p.name)


def _damage(kind: str, rng: np.random.Generator, root: Path) -> list[str]:
    """Apply one damage; returns the relative paths a failure must name (any one of them)."""
    dataset = LeRobotDataset(root)
    episode = dataset.episodes[int(rng.integers(len(dataset.episodes)))]

    def rel(path) -> str:
        return str(Path(path).relative_to(root))

    if kind == "drop_frame":
        segment = episode.videos[dataset.camera_keys[int(rng.integers(len(dataset.camera_keys)))]]
        first = int(round(segment.from_timestamp * dataset.fps))
        d.drop_video_frame(segment.path, first + int(rng.integers(1, episode.length - 1)))
        return [rel(segment.path)]
    if kind == "drop_rows":
        return [rel(d.drop_data_rows(root, episode.index))]
    if kind == "drop_metadata_row":
        d.drop_metadata_row(root, episode.index)
        return [rel(episode.data_path)]
    files = _meta_files(root)
    if kind == "truncate":
        files += sorted({e.data_path for e in dataset.episodes}) + sorted(
            {s.path for e in dataset.episodes for s in e.videos.values()})
        path = files[int(rng.integers(len(files)))]
        d.truncate(path, float(rng.uniform(0.1, 0.9)))
        return [rel(path)]
    path = files[int(rng.integers(len(files)))]
    d.flip_byte(path, int(rng.integers(path.stat().st_size)))
    return [rel(path)]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", [0, 1])
def test_one_damage_is_exact_or_named(tmp_path, seed, kind):
    rng = np.random.default_rng([seed, KINDS.index(kind)])
    _dataset(rng, tmp_path / "clean")
    clean, clean_rejects = read_build(tmp_path / "clean")
    assert not clean_rejects
    shutil.copytree(tmp_path / "clean", tmp_path / "damaged")
    names = _damage(kind, rng, tmp_path / "damaged")
    try:
        samples, rejects = read_build(tmp_path / "damaged")
    except DatasetError as err:  # the whole dataset refused: it must say where
        assert any(n in str(err) for n in names), (names, str(err))
        return
    for key, sample in samples.items():
        assert key in clean and same_sample(sample, clean[key]), (names, key)
    for reject in rejects:
        assert any(n in reject["reason"] for n in names), (names, reject)
    rejected = {r["episode"] for r in rejects}
    for key in clean:
        assert key in samples or int(key.split("/")[0]) in rejected, (names, key, rejects)
