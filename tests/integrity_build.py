"""Run a cache build's reading half (audit + decode stage) in-process, without Ray or the VAE.

Integrity is decided there: what reaches the encoder is what the cache holds.
`read_build` returns the samples a build would encode, keyed "episode/frame",
and the rejected episodes, or raises `DatasetError` when the dataset cannot be
opened at all, exactly as `pipeline.preprocess` does before Ray starts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from stages.decode import DecodeGroup, DecodeSpec
from stages.lerobot import LeRobotDataset
from stages.lerobot_audit import audit
from stages.plan import ClipGeometry

GEOM = ClipGeometry(num_frames=3, frame_stride=1, action_horizon=2, sample_stride=1)  # every frame read


def read_build(root: Path) -> tuple[dict[str, dict], list[dict]]:
    dataset = LeRobotDataset(root)
    rejects = audit(dataset)
    spec = DecodeSpec(str(root), dataset.camera_keys, dataset.state_key, dataset.action_key, GEOM, 16, 16,
                      {t: t for t in dataset.tasks})
    row = DecodeGroup(spec)({"shard": 0, "episodes": [e.index for e in dataset.episodes]})
    rejects += json.loads(row["rejects"])
    samples = {}
    for i, meta in enumerate(json.loads(row["meta"])):
        samples[f"{meta['episode']}/{meta['frame']}"] = {
            "actions": row["actions"][i], "proprio": row["proprio"][i],
            "pixels": row["frames"][row["clip_index"][i]], "task": meta["task"]}
    return samples, rejects


def same_sample(a: dict, b: dict) -> bool:
    """Exact actions, state and task; pixels within codec error (frames of the fixtures are 5 levels apart)."""
    return (np.array_equal(a["actions"], b["actions"]) and np.array_equal(a["proprio"], b["proprio"])
            and a["task"] == b["task"] and a["pixels"].shape == b["pixels"].shape
            and int(np.abs(a["pixels"].astype(int) - b["pixels"].astype(int)).max()) <= 3)
