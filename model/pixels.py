"""The model's pixel convention, the one place it is written down.

Every camera is resized to the cache's per-camera size (bilinear, antialiased),
the cameras are joined side by side in the policy's order, and pixels are
scaled from uint8 to [-1, 1] (what the Wan VAE reads). The offline cache and
the inference policy both call these functions, so training frames and live
frames cannot drift apart.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def resize(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 [N, h, w, 3] -> uint8 [N, height, width, 3] (bilinear, antialiased)."""
    if frames.shape[1:3] == (height, width):
        return frames
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def join_cameras(images: list[np.ndarray], height: int, width: int) -> np.ndarray:
    """Per-camera uint8 [N, h, w, 3] (any sizes) -> uint8 [N, height, width * ncam, 3], left to right."""
    return np.concatenate([resize(view, height, width) for view in images], axis=2)


def to_unit_range(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [..., H, W, 3] -> float32 [..., 3, H, W] in [-1, 1]."""
    x = torch.as_tensor(np.ascontiguousarray(images) if isinstance(images, np.ndarray) else images)
    return x.float().div(127.5).sub(1.0).movedim(-1, -3)
