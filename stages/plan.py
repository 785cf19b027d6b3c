"""Plan the training samples of an episode, and group episodes into shards.

A sample is anchored at frame t: video frames t, t+r, ..., t+(n-1)r, actions
t..t+H-1 and the proprio state at t. Indices past the episode end are clamped to
the last frame and flagged as padding, so every sample has the same shape.
Shards hold whole episodes, grouped deterministically from the episode lengths
alone, so a re-run assigns every sample to the same shard as the first run did.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.config import CacheConfig


@dataclass(frozen=True)
class ClipGeometry:
    num_frames: int  # n pixel frames per clip
    frame_stride: int  # r
    action_horizon: int  # H
    sample_stride: int  # one sample every this many frames

    @classmethod
    def from_config(cls, cfg: CacheConfig) -> "ClipGeometry":
        geom = cls(cfg.num_frames, cfg.frame_stride, cfg.action_horizon, cfg.sample_stride)
        if (geom.num_frames - 1) % 4:
            raise ValueError(f"cache.num_frames={geom.num_frames}: the causal Wan VAE needs 1 + 4k frames")
        if min(geom.frame_stride, geom.action_horizon, geom.sample_stride) < 1:
            raise ValueError("cache.frame_stride, action_horizon and sample_stride must be >= 1")
        return geom

    @property
    def latent_frames(self) -> int:
        return 1 + (self.num_frames - 1) // 4


@dataclass
class EpisodePlan:
    """Index arrays for all samples of one episode (S samples)."""

    starts: np.ndarray  # [S] frame t of each sample
    video_index: np.ndarray  # [S, n] source frame of each clip frame (clamped)
    video_pad: np.ndarray  # [S, n] True where the clip frame lies past the end
    action_index: np.ndarray  # [S, H] source row of each action step (clamped)
    action_mask: np.ndarray  # [S, H] True on real (non-padding) steps

    @property
    def needed_frames(self) -> np.ndarray:
        """Distinct video frames the episode's samples use: each is decoded once."""
        return np.unique(self.video_index)


def plan_episode(length: int, geom: ClipGeometry) -> EpisodePlan:
    if length < 1:
        raise ValueError(f"episode length must be >= 1, got {length}")
    starts = np.arange(0, length, geom.sample_stride, dtype=np.int64)
    video = starts[:, None] + geom.frame_stride * np.arange(geom.num_frames)[None, :]
    action = starts[:, None] + np.arange(geom.action_horizon)[None, :]
    return EpisodePlan(
        starts=starts,
        video_index=np.minimum(video, length - 1),
        video_pad=video >= length,
        action_index=np.minimum(action, length - 1),
        action_mask=action < length,
    )


def samples_in(length: int, geom: ClipGeometry) -> int:
    return len(range(0, length, geom.sample_stride))


def group_episodes(lengths: dict[int, int], geom: ClipGeometry, samples_per_shard: int) -> list[list[int]]:
    """Consecutive episodes (by index) per shard, closing a shard once it reaches the target size."""
    groups: list[list[int]] = [[]]
    count = 0
    for episode in sorted(lengths):
        if count >= samples_per_shard:
            groups.append([])
            count = 0
        groups[-1].append(episode)
        count += samples_in(lengths[episode], geom)
    return [g for g in groups if g]
