"""The offline cache's configuration: which dataset, and how its samples are cut and encoded."""

from __future__ import annotations

from dataclasses import dataclass, field

from model.config import TextConfig, VaeConfig


@dataclass
class DataConfig:
    """Where the LeRobot dataset lives. Empty `path` means: the embedded demo."""

    path: str = ""
    cameras: list[str] = field(default_factory=list)  # LeRobot keys; empty = all cameras
    state_key: str = "observation.state"
    action_key: str = "action"


@dataclass
class CacheConfig:
    """The offline latent cache (WebDataset shards + manifest)."""

    root: str = ""  # empty = <workdir>/cache
    image_height: int = 224  # per camera
    image_width: int = 224  # per camera
    num_frames: int = 9  # pixel frames per clip (n)
    frame_stride: int = 4  # r
    action_horizon: int = 32  # H
    sample_stride: int = 1
    latent_downsample: int = 2
    dtype: str = "float32"
    samples_per_shard: int = 256
    encode_batch_size: int = 4  # clips per VAE call
    encode_actors: int = 1  # VAE actors (one per GPU when the cluster has GPUs)
    encode_threads: int = 0  # torch threads per CPU encode actor; 0 = the node's CPUs / actors
    device: str = "auto"  # auto = cuda actors when the cluster has GPUs, else cpu
    max_reject_fraction: float = 0.1  # fail the run when more episodes than this are rejected
    current_frames: bool = False  # also store each sample's current frame (uint8), for model.shortcut
    vae: VaeConfig = field(default_factory=VaeConfig)
    text: TextConfig = field(default_factory=TextConfig)
