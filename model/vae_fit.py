"""Fit a small Wan VAE to a robot's own frames, for when no pretrained one can be loaded.

A randomly initialised `AutoencoderKLWan` is a fixed random projection: at 8x
downsampling it keeps the table and the arm but loses a 2-pixel goal marker
(`diagnostics/goal_probe.py`). Minutes of reconstruction training on the frames
the policy will see give latents that keep what the pixels show. Afterwards the
per-channel latent statistics are measured and stored in the VAE's config, so
`model.vae.encode` normalizes them as it does a pretrained Wan VAE's.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKLWan

from model.vae_fit_config import VaeFitConfig  # noqa: F401 (re-exported)


def frames_to_clips(frames: np.ndarray) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> one-frame clips [B, 3, 1, H, W] in [-1, 1]; uint8 clips [B, T, H, W, 3] -> [B, 3, T, H, W].

    Clips (T = 1 + 4k) train the VAE's temporal layers too, which the latents of a video's later frames pass through.
    """
    if frames.ndim == 5:
        return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 4, 1, 2, 3).float().div_(127.5).sub_(1.0)
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
    return x.unsqueeze(2)


def fit_vae(
    vae: AutoencoderKLWan,
    frames: np.ndarray,
    cfg: VaeFitConfig,
    on_step: Callable[[int, float], None] | None = None,
) -> list[float]:
    """Train `vae` in place on random batches of `frames` (uint8 [N, H, W, 3] or clips [N, T, H, W, 3]);
    returns the loss per step. With clips, `cfg.frame_steps` single-frame steps come first; one
    optimizer and one learning-rate schedule span both phases."""
    if len(frames) == 0:
        raise ValueError("fit_vae needs at least one frame")
    device = next(vae.parameters()).device
    rng = np.random.default_rng(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    single = frames.reshape(-1, *frames.shape[2:]) if frames.ndim == 5 and cfg.frame_steps > 0 else None
    phases = ([(single, cfg.frame_steps, cfg.frame_batch_size)] if single is not None else []) + [
        (frames, cfg.steps, cfg.batch_size)]
    total = sum(steps for _, steps, _ in phases)
    vae.train().requires_grad_(True)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total, pct_start=0.05)
    losses: list[float] = []
    for data, steps, batch_size in phases:
        for _ in range(steps):
            x = frames_to_clips(data[rng.integers(0, len(data), batch_size)]).to(device)
            posterior = vae.encode(x).latent_dist
            recon = vae.decode(posterior.sample(generator)).sample
            loss = F.l1_loss(recon, x) + F.mse_loss(recon, x) + cfg.kl_weight * posterior.kl().mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(len(losses) - 1, losses[-1])
    vae.eval().requires_grad_(False)
    set_latent_stats(vae, frames)
    return losses


@torch.no_grad()
def set_latent_stats(vae: AutoencoderKLWan, frames: np.ndarray, batch: int = 64, limit: int = 2048) -> None:
    """Store the per-channel mean and std of the posterior means over (up to `limit` of) `frames`."""
    device = next(vae.parameters()).device
    mus = [vae.encode(frames_to_clips(frames[i:i + batch]).to(device)).latent_dist.mode()
           for i in range(0, min(len(frames), limit), batch)]
    mu = torch.cat(mus).transpose(0, 1).flatten(1)  # [z, everything else]
    vae.register_to_config(latents_mean=mu.mean(1).tolist(), latents_std=mu.std(1).clamp_min(1e-4).tolist())


def fit_vae_timed(vae: AutoencoderKLWan, frames: np.ndarray, cfg: VaeFitConfig,
                  report_every: int = 50, report: Callable[[str], None] = print) -> list[float]:
    """`fit_vae` with a progress line every `report_every` steps (loss and steps per second)."""
    start = time.perf_counter()
    total = cfg.steps + (cfg.frame_steps if frames.ndim == 5 else 0)

    def on_step(step: int, loss: float) -> None:
        if (step + 1) % report_every == 0 or step + 1 == total:
            rate = (step + 1) / (time.perf_counter() - start)
            phase = "frames" if step < total - cfg.steps else "clips"
            report(f"VAE fit step {step + 1}/{total} ({phase}): loss {loss:.4f} ({rate:.2f} steps/s)")

    return fit_vae(vae, frames, cfg, on_step)
