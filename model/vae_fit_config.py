"""The VAE fit's hyperparameters, apart from `model.vae_fit` so configs import them without torch or diffusers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class VaeFitConfig:
    steps: int = 600
    batch_size: int = 16
    lr: float = 1e-3
    kl_weight: float = 1e-6  # as in latent-diffusion VAEs: a well-behaved posterior, not a compressed one
    seed: int = 0
