"""Simulator observation -> model input, exactly as the offline cache prepared training frames.

The cache resizes every camera with `stages.decode.resize`, joins the cameras
side by side (left to right, in the policy's camera order) and scales pixels
to [-1, 1]. Any drift here (another resize filter, another order) is a silent
train/eval mismatch, so this module reuses that function instead of its own.
"""

from __future__ import annotations

import numpy as np
import torch

from stages.decode import resize

VIDEO_PREFIX = "observation.images."


def camera_name(key: str) -> str:
    """LeRobot key `observation.images.corner` -> simulator camera `corner`."""
    return key.removeprefix(VIDEO_PREFIX)


def join_cameras(images: dict[str, np.ndarray], cameras: list[str], height: int, width: int) -> np.ndarray:
    """uint8 [height, width * ncam, 3]: each camera resized like the cache, then side by side."""
    missing = [c for c in cameras if c not in images]
    if missing:
        raise KeyError(f"observation has no camera(s) {missing}; it has {sorted(images)}")
    views = [resize(np.ascontiguousarray(images[c])[None], height, width)[0] for c in cameras]
    return np.concatenate(views, axis=1)


def to_pixels(joined: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] (or [B, H, W, 3]) -> float32 [3, H, W] (or [B, 3, H, W]) in [-1, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(joined)).float().div_(127.5).sub_(1.0)
    return x.movedim(-1, -3)
