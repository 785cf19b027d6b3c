"""What the LeRobot reader resolves each episode to: where its rows and video frames live, and its frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class VideoSegment:
    """An episode's span in one mp4 (v3 files hold several episodes back to back)."""

    path: Path
    from_timestamp: float
    to_timestamp: float


@dataclass(frozen=True)
class Episode:
    index: int
    length: int
    task: str
    task_index: int
    fps: float
    videos: dict[str, VideoSegment]
    data_path: Path  # parquet holding its rows (selected by `episode_index`)


@dataclass(frozen=True)
class EpisodeFrames:
    timestamp: np.ndarray  # [T] float64, seconds from the episode start
    frame_index: np.ndarray  # [T] int64
    state: np.ndarray  # [T, P] float32
    action: np.ndarray  # [T, A] float32
