"""The one configuration tree of the pipeline, composed from the layers' own configs.

Each layer owns the dataclasses of its concern (`model.config`, `stages.config`,
`sim.config`, `cluster.config`); this module adds training and tracking, composes
them into `Config`, and checks what spans layers (`validate`). Presets live in
`pipeline.presets`, dotted overrides in `pipeline.cli`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from cluster.config import ClusterConfig
from model.config import ModelConfig
from pipeline.prior.config import PretrainConfig, VaeFitRunConfig
from pipeline.serve.config import ServeConfig
from sim.config import DemoConfig, EvalConfig
from sim.corpus_config import CorpusConfig
from stages.config import CacheConfig, DataConfig


class Allocator(str, Enum):
    """auto = tcmalloc (Debian: libtcmalloc-minimal4), else jemalloc (libjemalloc2), else mimalloc (the
    cmeel-mimalloc wheel, installed by `make setup`), else the C library's malloc."""

    auto = "auto"
    system = "system"
    jemalloc = "jemalloc"
    tcmalloc = "tcmalloc"
    mimalloc = "mimalloc"


class Precision(str, Enum):
    """auto = bf16 autocast on CUDA with bf16, else fp32; bf16 = bf16 autocast (CPU too), fp32 master weights."""

    auto = "auto"
    fp32 = "fp32"
    bf16 = "bf16"


@dataclass
class TrainConfig:
    run_name: str = ""  # empty = derived from config hash
    steps: int = 20000
    batch_size: int = 16  # per worker
    grad_accum: int = 1
    lr: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.01
    warmup_steps: int = 500
    grad_clip: float = 1.0
    seed: int = 0
    pixel_shift: int = 0  # random shift of the current frame by up to this many pixels (model.shortcut)
    # keep each worker's decoded shards in RAM after the first epoch (same order, no tar parsing again);
    # costs about the cache's size on disk, so it is for caches that fit in memory
    keep_shards_in_memory: bool = False
    # the cache's last shards (whole episodes) kept out of training: their action and video losses are logged
    # as val_* at every checkpoint, with fixed noise, so runs compare on data they never fitted (0 = off)
    heldout_shards: int = 0
    val_batches: int = 4  # batches of train.batch_size per validation
    num_workers: int = 4
    use_gpu: bool = False
    checkpoint_every: int = 1000
    max_failures: int = 3  # worker restarts from the last checkpoint before the run fails
    log_every: int = 10
    plot_every: int = 1000
    # Memory levers; with the paper preset's frozen bf16 weights the defaults fit its step in 12 GiB
    # (benchmarks/train_throughput.py part B):
    separate_branch_passes: bool = True  # video then action forward/backward: one branch's activations at a time
    checkpoint_blocks: int = -1  # activation checkpointing of the first k backbone blocks of each pass (-1 = all)
    # of those, the first m recompute everything; the others keep matmul and attention outputs
    # and recompute only the cheap ops (norms, RoPE, GELU, LoRA's rank-r products)
    full_recompute_blocks: int = 4
    allocator: Allocator = Allocator.auto  # malloc of the training workers (LD_PRELOAD)
    precision: Precision = Precision.auto  # autocast of the forward passes; weights and AdamW state stay fp32


@dataclass
class TrackingConfig:
    uri: str = ""  # empty = $MLFLOW_TRACKING_URI or sqlite in the workdir
    experiment: str = "light-wam"
    registered_model: str = "light-wam"


@dataclass
class Config:
    preset: str = "demo"
    workdir: str = "work"
    data: DataConfig = field(default_factory=DataConfig)
    demo: DemoConfig = field(default_factory=DemoConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    vae_fit: VaeFitRunConfig = field(default_factory=VaeFitRunConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    corpus: CorpusConfig = field(default_factory=CorpusConfig)


class ConfigError(ValueError):
    """A config that cannot run: the message names the key(s) and what they accept."""


def validate(cfg: Config) -> None:
    """Checks that span layers; each layer checks its own values where it uses them."""
    problems = []
    if cfg.cache.action_horizon != cfg.model.action_horizon:
        problems.append(f"cache.action_horizon={cfg.cache.action_horizon} and model.action_horizon="
                        f"{cfg.model.action_horizon} must be equal: the cache stores the chunks the expert predicts")
    if cfg.model.shortcut.enabled and not cfg.cache.current_frames:
        problems.append("model.shortcut.enabled=true trains on each sample's current frame: set "
                        "cache.current_frames=true as well (the cache is then built once more, with the frames)")
    if cfg.train.pixel_shift and not cfg.model.shortcut.enabled:
        problems.append("train.pixel_shift moves the frame the shortcut reads: set model.shortcut.enabled=true")
    if cfg.model.backbone.text_dim != cfg.cache.text.dim:
        problems.append(f"model.backbone.text_dim={cfg.model.backbone.text_dim} must equal cache.text.dim="
                        f"{cfg.cache.text.dim}: the backbone reads the cached text embeddings")
    floats = ("float32", "bfloat16", "float16")
    if cfg.model.backbone.frozen_dtype not in ("", *floats):
        problems.append(f"model.backbone.frozen_dtype={cfg.model.backbone.frozen_dtype!r}: use one of "
                        f"{', '.join(floats)}, or empty for the model's dtype")
    if cfg.preset == "paper":
        problems += paper_departures(cfg)
    if problems:
        raise ConfigError("; ".join(problems))


def paper_departures(cfg: Config) -> list[str]:
    """The options the paper does not have, set on a `paper` config."""
    out = []
    if cfg.model.shortcut.enabled:
        out.append("the paper preset refuses model.shortcut.enabled=true (not in the paper's model)")
    if cfg.train.pixel_shift:
        out.append("the paper preset refuses train.pixel_shift (not in the paper's recipe)")
    return out
