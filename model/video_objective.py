"""Flow matching on the downsampled latent clip: frame 0 is clean context, the rest are noised.

Wan's convention: x_t = (1 - sigma) x0 + sigma eps, the DiT predicts the
velocity eps - x0, and its timestep is sigma * 1000. Sigma comes from a uniform
u warped by the shift s (sigma = s u / (1 + (s - 1) u)), which favours high noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

NUM_TRAIN_TIMESTEPS = 1000.0


@dataclass
class NoisedClip:
    x_t: torch.Tensor  # [B, C, F, h, w], frame 0 clean
    target: torch.Tensor  # [B, C, F, h, w], eps - x0 (frame 0 unused)
    timestep: torch.Tensor  # [B, F * tokens_per_frame], 0 on frame 0


def shifted_sigma(u: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * u / (1 + (shift - 1) * u)


def noise_clip(x0: torch.Tensor, shift: float, tokens_per_frame: int, generator: torch.Generator | None = None) -> NoisedClip:
    """One sigma per sample for frames 1..F-1; frame 0 stays the clean observation at timestep 0."""
    b, _, f = x0.shape[:3]
    u = torch.rand(b, generator=generator, device=x0.device, dtype=torch.float32)
    sigma = shifted_sigma(u, shift).to(x0.dtype).view(b, 1, 1, 1, 1)
    eps = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = torch.cat([x0[:, :, :1], ((1 - sigma) * x0 + sigma * eps)[:, :, 1:]], dim=2)
    frame_t = torch.ones(b, f, device=x0.device) * (sigma.view(b, 1).float() * NUM_TRAIN_TIMESTEPS)
    frame_t[:, 0] = 0.0
    return NoisedClip(x_t=x_t, target=eps - x0, timestep=frame_t.repeat_interleave(tokens_per_frame, dim=1))


def masked_video_loss(pred: torch.Tensor, target: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
    """MSE over the predicted frames 1.., skipping latent frames whose source frames are all padding."""
    err = (pred[:, :, 1:].float() - target[:, :, 1:].float()).pow(2).mean(dim=(1, 3, 4))  # [B, F-1]
    m = frame_mask[:, 1:].to(err.dtype)
    return (err * m).sum() / m.sum().clamp(min=1.0)


@torch.no_grad()
def sample_future(backbone: Callable, first: torch.Tensor, frames: int, context: torch.Tensor, shift: float,
                  steps: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """[B, C, frames, h, w]: frame 0 is `first` [B, C, 1, h, w]; frames 1.. come from noise by `steps` Euler
    steps on the shifted sigma schedule, the way training noised them (first-frame-causal, frame 0 at t=0).

    `backbone(x, context, timestep, first_frame_causal=True)` returns (_, velocity), as `WanBackbone` does.
    """
    b, c, _, h, w = first.shape
    x = torch.randn((b, c, frames, h, w), generator=generator, device=first.device, dtype=first.dtype)
    x[:, :, 0] = first[:, :, 0]
    sigmas = shifted_sigma(torch.linspace(1.0, 0.0, steps + 1), shift).tolist()
    tokens = (h // backbone.cfg.patch_size[1]) * (w // backbone.cfg.patch_size[2])
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        t = torch.full((b, frames), s * NUM_TRAIN_TIMESTEPS, device=first.device)
        t[:, 0] = 0.0
        _, velocity = backbone(x, context, t.repeat_interleave(tokens, dim=1), first_frame_causal=True)
        x[:, :, 1:] = x[:, :, 1:] + (s_next - s) * velocity[:, :, 1:]
    return x
