"""The VAE fit's hyperparameters, apart from `model.vae_fit` so configs import them without torch or diffusers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class VaeFitConfig:
    steps: int = 600  # on clips (or on single frames when the data are frames)
    batch_size: int = 16
    # fitting clips: first this many steps on their single frames (batches of `frame_batch_size`). Per frame seen
    # the spatial path learns several times faster alone than inside 4x-time-compressed clips, at the same cost
    # per frame; the clip steps after it train the temporal layers every later latent frame passes through.
    frame_steps: int = 0
    frame_batch_size: int = 16
    lr: float = 1e-3
    kl_weight: float = 1e-6  # as in latent-diffusion VAEs: a well-behaved posterior, not a compressed one
    seed: int = 0
