"""Where things are in the current frame, read straight from its pixels: conv layers and a spatial softmax.

The Wan VAE compresses 8x8 pixels into one latent position and the small backbone
pools its tokens, so a 2 cm goal marker's place can be lost before the expert sees
it (diagnostics/goal_probe.py). The spatial softmax turns each feature map into the (x, y) of its peak (Levine et
al. 2016), a bottleneck made of positions.
"""

from __future__ import annotations

import torch
from torch import nn


class SpatialSoftmax(nn.Module):
    """[B, C, H, W] -> [B, 2C]: per channel the softmax-weighted mean x (first C) and y (last C), in [-1, 1]."""

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        b, c, h, w = maps.shape
        weights = maps.flatten(2).softmax(-1).view(b, c, h, w)
        ys = torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=maps.dtype)
        xs = torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=maps.dtype)
        return torch.cat([(weights.sum(2) * xs).sum(-1), (weights.sum(3) * ys).sum(-1)], dim=1)


class PixelKeypoints(nn.Module):
    """pixels [B, 3, H, W] (or [B, 3, 1, H, W]) in [-1, 1] -> [B, 2 * channels] keypoint coordinates.

    Two stride-2 convolutions then two at that resolution: a 64x128 frame gives
    16x32 maps, and the softmax average places each peak finer than one map cell.
    """

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        half = max(channels // 2, 1)
        self.out_dim = 2 * channels
        self.convs = nn.Sequential(
            nn.Conv2d(3, half, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(half, channels, 3, stride=2, padding=1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )
        self.keypoints = SpatialSoftmax()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.ndim == 5:  # [B, 3, 1, H, W]: the current frame as a one-frame clip
            if pixels.shape[2] != 1:
                raise ValueError(f"PixelKeypoints reads one frame, got a clip of {pixels.shape[2]}")
            pixels = pixels[:, :, 0]
        return self.keypoints(self.convs(pixels.to(self.convs[0].weight.dtype)))
