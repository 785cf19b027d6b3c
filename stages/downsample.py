"""Split encoded clips into the two training inputs, and mark padded latent frames.

The video objective reads the whole latent clip average-pooled spatially by
`latent_downsample` (input and target); the action branch reads the
full-resolution latent of the current frame, which is latent frame 0 because the
causal Wan VAE encodes pixel frame 0 alone into it.
"""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F


def pool_latents(latents: np.ndarray | torch.Tensor, factor: int) -> np.ndarray:
    """[..., C, F, h, w] -> [..., C, F, h/factor, w/factor] by spatial average pooling."""
    x = torch.as_tensor(latents)
    if factor == 1:
        return x.numpy()
    h, w = x.shape[-2:]
    if h % factor or w % factor:
        raise ValueError(f"latent size {h}x{w} is not divisible by latent_downsample={factor}")
    lead = x.shape[:-2]
    pooled = F.avg_pool2d(x.reshape(-1, 1, h, w).float(), factor)
    return pooled.reshape(*lead, h // factor, w // factor).to(x.dtype).numpy()


def latent_frame_mask(video_pad: np.ndarray) -> np.ndarray:
    """[..., n] pixel padding flags -> [..., 1 + (n-1)/4] latent validity.

    Latent frame 0 is pixel frame 0; latent frame k > 0 covers pixel frames
    1+4(k-1) .. 4k and is invalid only when all of those are padding.
    """
    pad = np.asarray(video_pad, dtype=bool)
    n = pad.shape[-1]
    first = ~pad[..., :1]
    rest = ~pad[..., 1:].reshape(*pad.shape[:-1], (n - 1) // 4, 4).all(axis=-1)
    return np.concatenate([first, rest], axis=-1)


def split_latents(latents: np.ndarray, video_pad: np.ndarray, factor: int) -> dict[str, np.ndarray]:
    """Full latents [S, C, F, H/8, W/8] -> the cached per-sample arrays."""
    return {
        "video_latents": pool_latents(latents, factor),
        "current_latent": np.ascontiguousarray(latents[:, :, :1]),
        "video_frame_mask": latent_frame_mask(video_pad),
    }


class Downsample:
    """Ray Data `map` stage: replaces a group row's full `latents` with the cached arrays."""

    def __init__(self, factor: int):
        self.factor = factor

    def __call__(self, row: dict) -> dict:
        start = time.perf_counter()
        row = dict(row)
        row.update(split_latents(row.pop("latents"), row["video_pad"], self.factor))
        row["t_downsample"] = time.perf_counter() - start
        return row
