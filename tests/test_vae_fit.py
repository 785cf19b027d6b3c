"""Fitting the small Wan VAE to the robot's own frames (`model.vae_fit`), on real MetaWorld renders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from model.config import VaeConfig
from model.vae import build_vae, decode, encode
from model.vae_fit import VaeFitConfig, fit_vae, frames_to_clips
from sim.metaworld_env import MetaWorldEnv

TINY_VAE = VaeConfig(base_dim=8, dim_mult=[1, 1, 1, 1], num_res_blocks=1)


@pytest.fixture(scope="module")
def frames() -> np.ndarray:
    """32 first frames of seeded reach-v3 layouts (corner camera, 32x32)."""
    with MetaWorldEnv("reach-v3", ["corner"], 32, 32, max_steps=10) as env:
        return np.stack([env.reset(seed)["images"]["corner"] for seed in range(32)])


def reconstruction_error(vae, clips: torch.Tensor) -> float:
    return float((decode(vae, encode(vae, clips)) - clips).abs().mean())


def test_fitting_learns_the_frames_and_normalizes_the_latents(frames, tmp_path: Path):
    vae = build_vae(TINY_VAE)
    clips = frames_to_clips(frames)
    before = reconstruction_error(vae, clips)
    losses = fit_vae(vae, frames, VaeFitConfig(steps=60, batch_size=8, lr=3e-3))
    after = reconstruction_error(vae, clips)
    assert len(losses) == 60 and np.mean(losses[-10:]) < np.mean(losses[:10])
    assert after < 0.5 * before, (before, after)
    assert not vae.training and not any(p.requires_grad for p in vae.parameters())

    latents = encode(vae, clips).transpose(0, 1).flatten(1)  # [z, ...]: each channel ~N(0, 1) over the frames
    assert latents.mean(1).abs().max() < 0.05
    assert torch.allclose(latents.std(1), torch.ones(latents.shape[0]), atol=0.05)

    # what a user does next: save it and point cache.vae.pretrained_path at it
    vae.save_pretrained(tmp_path / "fitted" / "vae")
    loaded = build_vae(VaeConfig(pretrained_path=str(tmp_path / "fitted")))
    assert torch.equal(encode(loaded, clips), encode(vae, clips))


def test_fit_refuses_no_frames():
    with pytest.raises(ValueError, match="at least one frame"):
        fit_vae(build_vae(TINY_VAE), np.zeros((0, 32, 32, 3), np.uint8), VaeFitConfig(steps=1))


def test_clip_fit_starts_with_their_single_frames(frames):
    """`frame_steps` single-frame steps, then the clip steps: the single frames alone already reconstruct."""
    clips = np.stack([frames[i:i + 5] for i in range(0, 25, 5)])  # [5, 5, H, W, 3]: 5-frame "clips"
    vae = build_vae(TINY_VAE)
    before = reconstruction_error(vae, frames_to_clips(frames))
    losses = fit_vae(vae, clips, VaeFitConfig(steps=3, batch_size=2, frame_steps=60, frame_batch_size=8, lr=3e-3))
    assert len(losses) == 63
    assert reconstruction_error(vae, frames_to_clips(frames)) < 0.5 * before
