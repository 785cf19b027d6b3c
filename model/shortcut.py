"""Not in the paper: a direct path from the current frame's pixels and the robot state to the actions.

In the paper's model the state is one context token the image tokens attend to,
and where things are must survive the VAE's 8x8 compression and the expert's
pooling. Without a pretrained prior, small markers are lost on the way
(benchmarks/RESULTS.md). This module reads keypoints from the current frame
(`model.pixel_keypoints`) and the normalized state, and returns one vector that
`LightWAM` adds to the expert's fused vector. Its output layers start at zero,
so a model with it starts as the model without it.
"""

from __future__ import annotations

import torch
from torch import nn

from model.config import ShortcutConfig
from model.pixel_keypoints import PixelKeypoints


def _zero_last(mlp: nn.Sequential) -> nn.Sequential:
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


class Shortcut(nn.Module):
    """(proprio [B, P], pixels [B, 3, 1, H, W] in [-1, 1]) -> [B, hidden_dim], zero at init."""

    def __init__(self, cfg: ShortcutConfig, proprio_dim: int, hidden_dim: int) -> None:
        super().__init__()
        # no input LayerNorm on the state: it would erase the mean of its few, already normalized features
        self.state_proj = _zero_last(nn.Sequential(nn.Linear(proprio_dim, hidden_dim), nn.GELU(),
                                                   nn.Linear(hidden_dim, hidden_dim)))
        self.keypoints = PixelKeypoints(cfg.keypoints)
        self.pixel_proj = _zero_last(nn.Sequential(nn.Linear(self.keypoints.out_dim, hidden_dim), nn.GELU(),
                                                   nn.Linear(hidden_dim, hidden_dim)))

    def forward(self, proprio: torch.Tensor, pixels: torch.Tensor | None) -> torch.Tensor:
        if pixels is None:
            raise ValueError("model.shortcut needs the current frame's pixels: a cache built with "
                             "cache.current_frames=true for training, the camera images at inference")
        dtype = self.state_proj[0].weight.dtype
        return self.state_proj(proprio.to(dtype)) + self.pixel_proj(self.keypoints(pixels).to(dtype))
