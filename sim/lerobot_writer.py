"""Write a LeRobot v3.0 dataset: one parquet frame table, one mp4 per camera, metadata.

Episodes are appended one by one; videos are encoded as they arrive (episodes
concatenated in one file per camera), the tables are written by `finish()`.
The demo dataset is small, so everything lives in chunk-000/file-000; the
size limits in info.json are LeRobot's defaults and only describe the layout.
Frame k of the video file has pts k in time base 1/fps, so the frame of a row
sits exactly at the episode's `from_timestamp` + the row's `timestamp`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from sim.config import Codec

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_FILES_SIZE_MB = 100
VIDEO_FILES_SIZE_MB = 200
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"

# codec setting -> (PyAV encoder, name in info.json, encoder options, pixel format).
# g=2: a keyframe every other frame, as LeRobot does, so random access stays cheap. yuv420p halves the
# colour resolution: at 64x64 a 2-pixel goal marker loses most of its colour (diagnostics/goal_probe.py).
ENCODERS: dict[Codec, tuple[str, str, dict[str, str], str]] = {
    Codec.h264: ("libx264", "h264", {"crf": "18", "g": "2", "bf": "0", "preset": "medium"}, "yuv420p"),
    Codec.av1: ("libsvtav1", "av1", {"crf": "30", "g": "2", "preset": "8"}, "yuv420p"),
    Codec.h264_lossless: ("libx264", "h264", {"qp": "0", "g": "2", "bf": "0", "preset": "medium"}, "yuv444p"),
}


def video_key(camera: str) -> str:
    return f"observation.images.{camera}"


class _VideoFile:
    """One camera's mp4: frames appended in order, pts = frame number in time base 1/fps."""

    def __init__(self, path: Path, codec: Codec, fps: int, width: int, height: int) -> None:
        encoder, _, options, pix_fmt = ENCODERS[codec]
        os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints a banner per stream otherwise
        path.parent.mkdir(parents=True, exist_ok=True)
        self._container = av.open(str(path), mode="w")
        self._stream = self._container.add_stream(encoder, rate=fps, options=dict(options))
        self._stream.width, self._stream.height, self._stream.pix_fmt = width, height, pix_fmt
        self._stream.time_base = Fraction(1, fps)
        self.frames = 0

    def append(self, images: np.ndarray) -> None:
        for image in images:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames
            self.frames += 1
            self._container.mux(self._stream.encode(frame))

    def close(self) -> None:
        self._container.mux(self._stream.encode(None))
        self._container.close()


def _stats(values: np.ndarray) -> dict[str, list[float] | list[int]]:
    """min/max/mean/std over frames, per dimension (LeRobot's stats.json shape)."""
    values = values.reshape(len(values), -1).astype(np.float64)
    return {
        "min": values.min(0).tolist(),
        "max": values.max(0).tolist(),
        "mean": values.mean(0).tolist(),
        "std": values.std(0).tolist(),
        "count": [len(values)],
    }


def _float_lists(rows: np.ndarray) -> pa.Array:
    """[N, D] float32 -> Arrow fixed-size list<float32>[D], as LeRobot stores vector features."""
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(rows.reshape(-1)), rows.shape[1])


@dataclass
class _Episode:
    index: int
    task: str
    length: int
    from_index: int
    layout_seed: int | None = None
    state_stats: dict = field(default_factory=dict)
    action_stats: dict = field(default_factory=dict)


class LeRobotV3Writer:
    """Append episodes, then `finish()`; the result is a complete LeRobot v3.0 dataset at `root`."""

    def __init__(
        self,
        root: Path,
        fps: int,
        cameras: list[str],
        width: int,
        height: int,
        codec: Codec = Codec.h264,
        robot_type: str = "sawyer",
        state_names: list[str] | None = None,
        action_names: list[str] | None = None,
    ) -> None:
        self.root = Path(root)
        self.fps, self.cameras, self.width, self.height = fps, list(cameras), width, height
        self.codec, self.robot_type = Codec(codec), robot_type
        self.state_names, self.action_names = state_names, action_names
        self._videos = {
            cam: _VideoFile(self.root / VIDEO_PATH.format(video_key=video_key(cam), chunk_index=0, file_index=0),
                            self.codec, fps, width, height)
            for cam in self.cameras
        }
        self._tasks: dict[str, int] = {}
        self._episodes: list[_Episode] = []
        self._columns: dict[str, list[np.ndarray]] = {k: [] for k in
                                                      ("state", "action", "frame_index", "episode_index", "task_index")}
        self._frames = 0

    def add_episode(self, task: str, states: np.ndarray, actions: np.ndarray, images: dict[str, np.ndarray],
                    layout_seed: int | None = None) -> None:
        """One episode: states [T, S], actions [T, A], images {camera: uint8 [T, H, W, 3]}.

        `layout_seed`, when the episode came from a simulator reset with it, goes into the episode metadata so
        the same layouts can be replayed later (evaluation on the training layouts).
        """
        length = len(states)
        if length == 0 or len(actions) != length:
            raise ValueError(f"episode needs as many states as actions (>0), got {length} and {len(actions)}")
        for cam in self.cameras:
            shape = images[cam].shape
            if shape != (length, self.height, self.width, 3) or images[cam].dtype != np.uint8:
                raise ValueError(f"camera {cam}: expected uint8 {(length, self.height, self.width, 3)}, got "
                                 f"{images[cam].dtype} {shape}")
        task_index = self._tasks.setdefault(task, len(self._tasks))
        episode = _Episode(len(self._episodes), task, length, self._frames, layout_seed,
                           _stats(np.asarray(states)), _stats(np.asarray(actions)))
        for cam in self.cameras:
            self._videos[cam].append(images[cam])
        cols = self._columns
        cols["state"].append(np.asarray(states, dtype=np.float32))
        cols["action"].append(np.asarray(actions, dtype=np.float32))
        cols["frame_index"].append(np.arange(length, dtype=np.int64))
        cols["episode_index"].append(np.full(length, episode.index, dtype=np.int64))
        cols["task_index"].append(np.full(length, task_index, dtype=np.int64))
        self._episodes.append(episode)
        self._frames += length

    def finish(self) -> None:
        """Close the videos and write the frame table and all metadata."""
        for video in self._videos.values():
            video.close()
        if not self._episodes:
            raise ValueError(f"no episodes were added to {self.root}")
        cols = {k: np.concatenate(v) for k, v in self._columns.items()}
        self._write_data(cols)
        self._write_episodes()
        self._write_tasks()
        self._write_stats(cols)
        self._write_info(cols["state"].shape[1], cols["action"].shape[1])

    def _write_data(self, cols: dict[str, np.ndarray]) -> None:
        table = pa.table({
            "observation.state": _float_lists(cols["state"]),
            "action": _float_lists(cols["action"]),
            "timestamp": pa.array((cols["frame_index"] / self.fps).astype(np.float32)),
            "frame_index": pa.array(cols["frame_index"]),
            "episode_index": pa.array(cols["episode_index"]),
            "index": pa.array(np.arange(self._frames, dtype=np.int64)),
            "task_index": pa.array(cols["task_index"]),
        })
        path = self.root / DATA_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)

    def _write_episodes(self) -> None:
        eps = self._episodes
        columns: dict[str, list] = {
            "episode_index": [e.index for e in eps],
            "tasks": [[e.task] for e in eps],
            "length": [e.length for e in eps],
            "data/chunk_index": [0] * len(eps),
            "data/file_index": [0] * len(eps),
            "dataset_from_index": [e.from_index for e in eps],
            "dataset_to_index": [e.from_index + e.length for e in eps],
        }
        if all(e.layout_seed is not None for e in eps):
            columns["layout_seed"] = [e.layout_seed for e in eps]
        for cam in self.cameras:
            key = video_key(cam)
            columns[f"videos/{key}/chunk_index"] = [0] * len(eps)
            columns[f"videos/{key}/file_index"] = [0] * len(eps)
            columns[f"videos/{key}/from_timestamp"] = [e.from_index / self.fps for e in eps]
            columns[f"videos/{key}/to_timestamp"] = [(e.from_index + e.length) / self.fps for e in eps]
        for feature, attr in (("observation.state", "state_stats"), ("action", "action_stats")):
            for stat in ("min", "max", "mean", "std", "count"):
                columns[f"stats/{feature}/{stat}"] = [getattr(e, attr)[stat] for e in eps]
        columns["meta/episodes/chunk_index"] = [0] * len(eps)
        columns["meta/episodes/file_index"] = [0] * len(eps)
        path = self.root / EPISODES_PATH
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)

    def _write_tasks(self) -> None:
        # LeRobot keeps the task text as the pandas index and task_index as the one column.
        tasks = pd.DataFrame({"task_index": list(self._tasks.values())}, index=list(self._tasks))
        tasks.to_parquet(self.root / "meta" / "tasks.parquet")

    def _write_stats(self, cols: dict[str, np.ndarray]) -> None:
        stats = {
            "observation.state": _stats(cols["state"]),
            "action": _stats(cols["action"]),
            "timestamp": _stats(cols["frame_index"] / self.fps),
            "frame_index": _stats(cols["frame_index"]),
            "episode_index": _stats(cols["episode_index"]),
            "index": _stats(np.arange(self._frames)),
            "task_index": _stats(cols["task_index"]),
        }
        (self.root / "meta" / "stats.json").write_text(json.dumps(stats, indent=2))

    def _write_info(self, state_dim: int, action_dim: int) -> None:
        _, codec_name, _, pix_fmt = ENCODERS[self.codec]
        scalar = {"shape": [1], "names": None}
        features: dict[str, dict] = {
            "observation.state": {"dtype": "float32", "shape": [state_dim], "names": self.state_names},
            "action": {"dtype": "float32", "shape": [action_dim], "names": self.action_names},
        }
        for cam in self.cameras:
            features[video_key(cam)] = {
                "dtype": "video",
                "shape": [self.height, self.width, 3],
                "names": ["height", "width", "channels"],
                "info": {
                    "video.height": self.height,
                    "video.width": self.width,
                    "video.codec": codec_name,
                    "video.pix_fmt": pix_fmt,
                    "video.is_depth_map": False,
                    "video.fps": self.fps,
                    "video.channels": 3,
                    "has_audio": False,
                },
            }
        features["timestamp"] = {"dtype": "float32", **scalar}
        for name in ("frame_index", "episode_index", "index", "task_index"):
            features[name] = {"dtype": "int64", **scalar}
        info = {
            "codebase_version": CODEBASE_VERSION,
            "robot_type": self.robot_type,
            "total_episodes": len(self._episodes),
            "total_frames": self._frames,
            "total_tasks": len(self._tasks),
            "chunks_size": CHUNKS_SIZE,
            "data_files_size_in_mb": DATA_FILES_SIZE_MB,
            "video_files_size_in_mb": VIDEO_FILES_SIZE_MB,
            "fps": self.fps,
            "splits": {"train": f"0:{len(self._episodes)}"},
            "data_path": DATA_PATH,
            "video_path": VIDEO_PATH,
            "features": features,
        }
        (self.root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
