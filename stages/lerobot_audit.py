"""Whole-dataset checks run once, when a build opens the dataset (before any Ray work).

The per-episode reader only looks where the episode metadata points, so rows it
never points at would vanish without a word. `audit` reads the schema and the
`episode_index` column of every data parquet and compares them with the episode
metadata and `info.json`'s totals:

- a data file lacking a required column fails the whole dataset at once;
- rows of an episode the metadata does not list (or rows of a listed episode in a
  file the metadata does not point to) are returned as rejected episodes, so the
  build quarantines them by the same `cache.max_reject_fraction` rule as any other;
- `total_episodes` / `total_frames` that still disagree with what was found fail.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from stages.lerobot_files import DatasetError, read_parquet, scalars


def data_files(root: Path) -> list[Path]:
    return sorted((root / "data").rglob("*.parquet"))


def _episode_rows(path: Path, required: list[str]) -> dict[int, int]:
    """{episode_index: row count} of one data file, after checking its schema."""
    try:
        present = set(pq.read_schema(path).names)
    except Exception as err:  # truncated or not parquet: the episodes in it are rejected later, naming it
        raise _Unreadable(str(err)) from err
    missing = [c for c in required if c not in present]
    if missing:
        raise DatasetError(f"{path}: missing required columns {missing} (present: {sorted(present)})")
    try:
        values = scalars(read_parquet(path, ["episode_index"]), "episode_index", np.int64, path)
    except DatasetError as err:
        raise _Unreadable(str(err)) from err
    unique, counts = np.unique(values, return_counts=True)
    return dict(zip(unique.tolist(), counts.tolist()))


class _Unreadable(Exception):
    pass


def _meta_name(dataset) -> str:
    return str(dataset.root / ("meta/episodes.jsonl" if dataset.version.startswith("v2") else "meta/episodes"))


def audit(dataset) -> list[dict]:
    """Check a `LeRobotDataset` as a whole; returns rejected episodes as {"episode", "reason"}."""
    required = ["episode_index", "frame_index", "timestamp", dataset.state_key] + [dataset.action_key] * dataset.has_actions
    listed = {e.index: e for e in dataset.episodes}
    meta = _meta_name(dataset)
    unlisted: dict[int, list[tuple[Path, int]]] = {}
    misplaced: dict[int, list[Path]] = {}
    for path in data_files(dataset.root):
        try:
            rows = _episode_rows(path, required)
        except _Unreadable:
            continue  # the episodes it holds fail when read, naming the file
        for index, count in rows.items():
            if index not in listed:
                unlisted.setdefault(index, []).append((path, count))
            elif listed[index].data_path != path:
                misplaced.setdefault(index, []).append(path)
    rejects = [{"episode": i, "reason": f"{sum(n for _, n in where)} rows in "
                f"{', '.join(str(p) for p, _ in where)} but the episode is not in {meta}"}
               for i, where in sorted(unlisted.items())]
    rejects += [{"episode": i, "reason": f"rows also in {', '.join(map(str, paths))}, but {meta} places the "
                 f"episode in {listed[i].data_path}"} for i, paths in sorted(misplaced.items())]
    _check_totals(dataset, len(unlisted), sum(n for where in unlisted.values() for _, n in where))
    return rejects


def _check_totals(dataset, unlisted_episodes: int, unlisted_rows: int) -> None:
    info = dataset.root / "meta/info.json"
    episodes = len(dataset.episodes)
    frames = sum(e.length for e in dataset.episodes)
    for field, listed, extra in (("total_episodes", episodes, unlisted_episodes),
                                 ("total_frames", frames, unlisted_rows)):
        want = dataset.info.get(field)
        if want is not None and int(want) != listed + extra:
            raise DatasetError(
                f"{info}: {field} is {want}, but {_meta_name(dataset)} lists {listed}"
                + (f" and the data files hold {extra} more of unlisted episodes" if extra else "")
                + "; episodes or their metadata are missing"
            )
