"""Configuration of the prior's steps: fitting the VAE and pretraining the video DiT (`Config.vae_fit`, `.pretrain`)."""

from __future__ import annotations

from dataclasses import dataclass, field

from model.vae_fit_config import VaeFitConfig


@dataclass
class VaeFitRunConfig:
    """`python -m pipeline.prior.fit_vae`: the VAE of `cache.vae` fitted to the dataset's frames."""

    fit: VaeFitConfig = field(default_factory=VaeFitConfig)
    max_frames: int = 4096  # frames read from the dataset, spread evenly over its episodes
    # fit on single frames instead of clips cut as the cache cuts them; single frames leave the VAE's
    # temporal layers random, and with them the latents of every later frame of a clip
    single_frames: bool = False
    registered_model: str = "wan-vae"


@dataclass
class PretrainConfig:
    """`python -m pipeline.prior.pretrain`: the Wan DiT of `model.backbone`, all weights, video objective only.

    Batch size, learning rate, schedule, workers and checkpointing come from `train.*`;
    these fields are what differs from Light-WAM training.
    """

    # pipeline.run first runs the prior's chain (corpus -> VAE fit -> pretraining, pipeline.prior) and
    # trains Light-WAM on the fitted VAE and the pretrained DiT
    before_run: bool = False
    steps: int = 2000
    heldout_shards: int = 1  # the cache's last shards: the validation video loss and the pictures
    val_batches: int = 4  # batches of train.batch_size per validation (fixed noise draws)
    val_every: int = 200
    picture_clips: int = 4  # held-out clips whose predicted future frames are drawn
    sample_steps: int = 10  # Euler steps from noise for the pictures
    run_name: str = ""  # empty = derived from the config hash
    registered_model: str = "wan-prior"
