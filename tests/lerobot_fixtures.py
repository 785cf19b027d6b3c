"""Write tiny synthetic LeRobot datasets (v3.0 and v2.1 layouts) for tests.

Every video frame is a uniform grey whose level encodes the frame's global
index in the dataset (`frame_value`), so a test can tell from decoded pixels
exactly which frame it got. States and actions are deterministic per row, and
`Expected` records what a correct reader must return.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

LIBERO_CAMERAS = ["observation.images.image", "observation.images.wrist_image"]
CODEC_ENCODERS = {"h264": "libx264", "av1": "libsvtav1"}  # both in PyAV's wheels


def frame_value(global_index: int, camera_slot: int = 0) -> int:
    """Grey level of a frame; 5 levels apart so codec error (< 3) never confuses two frames."""
    value = 10 + 5 * (global_index % 48)
    return value if camera_slot == 0 else 255 - value


def value_to_index(level: float, camera_slot: int = 0) -> int:
    """Inverse of `frame_value` (modulo 48) for a decoded mean grey level."""
    if camera_slot != 0:
        level = 255 - level
    return int(round((level - 10) / 5))


@dataclass
class Expected:
    """What a correct reader returns for a synthetic dataset."""

    fps: int
    cameras: list[str]
    tasks: list[str]
    lengths: list[int]
    episode_tasks: list[str]
    states: list[np.ndarray] = field(default_factory=list)  # per episode [T, P] float32
    actions: list[np.ndarray] = field(default_factory=list)  # per episode [T, A] float32
    first_global: list[int] = field(default_factory=list)  # global index of each episode's frame 0


def write_video(path: Path, levels: list[int], fps: int, size: int, codec: str = "h264") -> None:
    """Encode uniform grey frames of the given levels as an mp4 (keyframe every 8 frames)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODEC_ENCODERS[codec], rate=fps, options={"g": "8"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for level in levels:
            image = np.full((size, size, 3), level, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _expected(lengths, tasks, fps, cameras, state_dim, action_dim) -> Expected:
    exp = Expected(fps=fps, cameras=list(cameras), tasks=list(tasks), lengths=list(lengths),
                   episode_tasks=[tasks[i % len(tasks)] for i in range(len(lengths))])
    start = 0
    for ep, length in enumerate(lengths):
        t = np.arange(length, dtype=np.float32)[:, None]
        exp.states.append((ep * 100 + t + np.arange(state_dim, dtype=np.float32) / 8).astype(np.float32))
        exp.actions.append((-ep - t / 16 + np.arange(action_dim, dtype=np.float32)).astype(np.float32))
        exp.first_global.append(start)
        start += length
    return exp


def _video_feature(size: int, fps: int, codec: str) -> dict:
    return {
        "dtype": "video",
        "shape": [size, size, 3],
        "names": ["height", "width", "channels"],
        "info": {"video.height": size, "video.width": size, "video.codec": codec,
                 "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": fps,
                 "video.channels": 3, "has_audio": False},
    }


def _info(version, exp, size, codec, state_dim, action_dim, data_path, video_path, **extra) -> dict:
    features = {key: _video_feature(size, exp.fps, codec) for key in exp.cameras}
    features["observation.state"] = {"dtype": "float32", "shape": [state_dim], "names": None}
    features["action"] = {"dtype": "float32", "shape": [action_dim], "names": None}
    for name in ("timestamp",):
        features[name] = {"dtype": "float32", "shape": [1], "names": None}
    for name in ("frame_index", "episode_index", "index", "task_index"):
        features[name] = {"dtype": "int64", "shape": [1], "names": None}
    return {
        "codebase_version": version, "robot_type": "synthetic",
        "total_episodes": len(exp.lengths), "total_frames": sum(exp.lengths),
        "total_tasks": len(exp.tasks), "chunks_size": 1000, "fps": exp.fps,
        "splits": {"train": f"0:{len(exp.lengths)}"},
        "data_path": data_path, "video_path": video_path, "features": features, **extra,
    }


def _frame_table(exp: Expected, episodes: list[int], fixed_size: bool) -> pa.Table:
    cols: dict[str, list] = {k: [] for k in ("timestamp", "frame_index", "episode_index", "index", "task_index")}
    states, actions = [], []
    for ep in episodes:
        length = exp.lengths[ep]
        cols["timestamp"] += list(np.arange(length, dtype=np.float32) / exp.fps)
        cols["frame_index"] += list(range(length))
        cols["episode_index"] += [ep] * length
        cols["index"] += list(range(exp.first_global[ep], exp.first_global[ep] + length))
        cols["task_index"] += [exp.tasks.index(exp.episode_tasks[ep])] * length
        states.append(exp.states[ep])
        actions.append(exp.actions[ep])

    def vectors(rows: np.ndarray) -> pa.Array:
        flat = pa.array(rows.reshape(-1), type=pa.float32())
        if fixed_size:
            return pa.FixedSizeListArray.from_arrays(flat, rows.shape[1])
        offsets = pa.array(np.arange(0, rows.size + 1, rows.shape[1], dtype=np.int32))
        return pa.ListArray.from_arrays(offsets, flat)

    return pa.table({
        "observation.state": vectors(np.concatenate(states)),
        "action": vectors(np.concatenate(actions)),
        "timestamp": pa.array(cols["timestamp"], type=pa.float32()),
        "frame_index": pa.array(cols["frame_index"], type=pa.int64()),
        "episode_index": pa.array(cols["episode_index"], type=pa.int64()),
        "index": pa.array(cols["index"], type=pa.int64()),
        "task_index": pa.array(cols["task_index"], type=pa.int64()),
    })


def write_v3_dataset(
    root: Path,
    lengths: tuple[int, ...] = (12, 15, 10),
    cameras: tuple[str, ...] = ("observation.images.front",),
    codec: str = "h264",
    fps: int = 10,
    size: int = 32,
    episodes_per_file: int = 2,
    tasks_layout: str = "index",
    state_dim: int = 6,
    action_dim: int = 4,
) -> Expected:
    """A v3.0 dataset: several episodes per data/video file, metadata in parquet.

    `tasks_layout` says where tasks.parquet keeps the text: "index" (an unnamed
    pandas index, stored as `__index_level_0__`, as LeRobot's writer does),
    "named_index" (a pandas index named `task`, as its v2.1 converter does) or
    "column" (a plain `task` column).
    """
    root = Path(root)
    exp = _expected(lengths, ["pick the cube", "open the drawer"], fps, cameras, state_dim, action_dim)
    files = [list(range(i, min(i + episodes_per_file, len(lengths))))
             for i in range(0, len(lengths), episodes_per_file)]
    meta_rows: list[dict] = []
    for file_index, episodes in enumerate(files):
        pq.write_table(_frame_table(exp, episodes, fixed_size=True),
                       _mkparent(root / f"data/chunk-000/file-{file_index:03d}.parquet"))
        for slot, camera in enumerate(cameras):
            levels = [frame_value(exp.first_global[ep] + t, slot) for ep in episodes for t in range(lengths[ep])]
            write_video(root / f"videos/{camera}/chunk-000/file-{file_index:03d}.mp4", levels, fps, size, codec)
        offset = 0
        for ep in episodes:
            row = {
                "episode_index": ep, "tasks": [exp.episode_tasks[ep]], "length": lengths[ep],
                "data/chunk_index": 0, "data/file_index": file_index,
                "dataset_from_index": exp.first_global[ep],
                "dataset_to_index": exp.first_global[ep] + lengths[ep],
            }
            for camera in cameras:
                row[f"videos/{camera}/chunk_index"] = 0
                row[f"videos/{camera}/file_index"] = file_index
                row[f"videos/{camera}/from_timestamp"] = offset / fps
                row[f"videos/{camera}/to_timestamp"] = (offset + lengths[ep]) / fps
            row["stats/action/min"] = exp.actions[ep].min(axis=0).tolist()
            row["stats/action/max"] = exp.actions[ep].max(axis=0).tolist()
            row["meta/episodes/chunk_index"] = 0
            row["meta/episodes/file_index"] = 0
            offset += lengths[ep]
            meta_rows.append(row)
    pq.write_table(pa.Table.from_pylist(meta_rows), _mkparent(root / "meta/episodes/chunk-000/file-000.parquet"))

    indices = range(len(exp.tasks))
    if tasks_layout == "index":
        tasks = pd.DataFrame({"task_index": indices}, index=exp.tasks)
    elif tasks_layout == "named_index":
        tasks = pd.DataFrame({"task_index": indices}, index=pd.Index(exp.tasks, name="task"))
    elif tasks_layout == "column":
        tasks = pd.DataFrame({"task_index": indices, "task": exp.tasks})
    else:
        raise ValueError(f"unknown tasks_layout {tasks_layout!r}")
    tasks.to_parquet(root / "meta/tasks.parquet")

    info = _info("v3.0", exp, size, codec, state_dim, action_dim,
                 "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
                 "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4",
                 data_files_size_in_mb=100, video_files_size_in_mb=500)
    for camera in cameras:  # newer writers record encoder settings per video feature
        info["features"][camera]["info"]["video.g"] = 8
    _write_json(root / "meta/info.json", info)
    _write_json(root / "meta/stats.json", {"action": {"min": [0.0] * action_dim, "max": [1.0] * action_dim}})
    return exp


def write_v21_dataset(
    root: Path,
    lengths: tuple[int, ...] = (12, 15),
    cameras: tuple[str, ...] = tuple(LIBERO_CAMERAS),
    codec: str = "h264",
    fps: int = 10,
    size: int = 32,
    state_dim: int = 8,
    action_dim: int = 7,
) -> Expected:
    """A LIBERO-like v2.1 dataset: one file per episode, jsonl metadata, no stats.json."""
    root = Path(root)
    exp = _expected(lengths, ["put the bowl on the plate", "open the top drawer"], fps, cameras,
                    state_dim, action_dim)
    for ep, length in enumerate(lengths):
        pq.write_table(_frame_table(exp, [ep], fixed_size=False),
                       _mkparent(root / f"data/chunk-000/episode_{ep:06d}.parquet"))
        for slot, camera in enumerate(cameras):
            levels = [frame_value(exp.first_global[ep] + t, slot) for t in range(length)]
            write_video(root / f"videos/chunk-000/{camera}/episode_{ep:06d}.mp4", levels, fps, size, codec)
    _write_jsonl(root / "meta/episodes.jsonl",
                 [{"episode_index": ep, "tasks": [exp.episode_tasks[ep]], "length": n}
                  for ep, n in enumerate(lengths)])
    _write_jsonl(root / "meta/tasks.jsonl", [{"task_index": i, "task": t} for i, t in enumerate(exp.tasks)])
    _write_jsonl(root / "meta/episodes_stats.jsonl",
                 [{"episode_index": ep, "stats": {"action": {"min": exp.actions[ep].min(axis=0).tolist(),
                                                             "max": exp.actions[ep].max(axis=0).tolist()}}}
                  for ep in range(len(lengths))])
    info = _info("v2.1", exp, size, codec, state_dim, action_dim,
                 "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
                 "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
                 total_chunks=1, total_videos=len(lengths) * len(cameras))
    _write_json(root / "meta/info.json", info)
    return exp


def _mkparent(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _write_json(path: Path, obj) -> None:
    _mkparent(path).write_text(json.dumps(obj, indent=2))


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    _mkparent(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
