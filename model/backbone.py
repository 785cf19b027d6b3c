"""The Wan DiT backbone: diffusers `WanTransformer3DModel` + peft LoRA + residual adapters.

The library's modules (RoPE, patch embedding, condition embedder, blocks, output
head) are used as they are; only the forward is ours, because Light-WAM needs
four things the stock forward lacks: per-token timesteps driven by us, the
first-frame-causal mask, adapters between blocks whose outputs are returned,
and stopping after the last fused block (the action path never needs the rest).
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from diffusers import WanTransformer3DModel
from peft import LoraConfig, inject_adapter_in_model
from peft.tuners.lora import LoraLayer
from torch import nn
from torch.utils.checkpoint import (
    CheckpointPolicy,
    checkpoint,
    create_selective_checkpoint_contexts,
)

from model.adapters import ResidualAdapter
from model.attention import FirstFrameCausalProcessor, first_frame_causal_mask
from model.config import BackboneConfig

# The paper's LoRA targets: self- and cross-attention q, k, v, out and both FFN linears.
LORA_TARGETS = r"blocks\.\d+\.(attn1|attn2)\.(to_q|to_k|to_v|to_out\.0)|blocks\.\d+\.ffn\.net\.(0\.proj|2)"
# Trained even when the DiT is frozen: the video head (output modulation + projection).
VIDEO_HEAD = ("proj_out.", "scale_shift_table")
# Architecture fields a pretrained directory must agree with.
_ARCH = ("num_attention_heads", "attention_head_dim", "in_channels", "text_dim", "freq_dim", "ffn_dim")


def _dit_kwargs(cfg: BackboneConfig, num_layers: int) -> dict:
    return dict(
        patch_size=tuple(cfg.patch_size),
        num_attention_heads=cfg.num_attention_heads,
        attention_head_dim=cfg.attention_head_dim,
        in_channels=cfg.in_channels,
        out_channels=cfg.in_channels,
        text_dim=cfg.text_dim,
        freq_dim=cfg.freq_dim,
        ffn_dim=cfg.ffn_dim,
        num_layers=num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        eps=1e-6,
    )


_MATMULS = {torch.ops.aten.mm.default, torch.ops.aten.addmm.default, torch.ops.aten.bmm.default}
_ATTENTION = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu.default,
              torch.ops.aten._scaled_dot_product_flash_attention.default,
              torch.ops.aten._scaled_dot_product_efficient_attention.default,
              torch.ops.aten._scaled_dot_product_cudnn_attention.default}


def keep_expensive_outputs(lora_rank: int):
    """Selective-checkpoint contexts: keep what costs FLOPs to redo (attention, full-width
    projections), recompute the rest, including LoRA's products through its rank-r bottleneck."""

    def policy(ctx, op, *args, **kwargs) -> CheckpointPolicy:
        if op in _ATTENTION:
            return CheckpointPolicy.MUST_SAVE
        if op in _MATMULS:
            a, b = args[-2], args[-1]  # addmm(bias, a, b), mm(a, b), bmm(a, b)
            if min(a.shape[-1], b.shape[-1]) > lora_rank:
                return CheckpointPolicy.MUST_SAVE
        return CheckpointPolicy.PREFER_RECOMPUTE

    return create_selective_checkpoint_contexts(policy)


def load_dit(cfg: BackboneConfig, num_layers: int | None = None) -> WanTransformer3DModel:
    """From `cfg.pretrained_path` (diffusers dir, `transformer/` subfolder if present) or random with `cfg.seed`.

    `num_layers` below the config's builds/loads only the first blocks (inference
    stops after the last fused block, so the rest would be dead weight).
    """
    num_layers = num_layers or cfg.num_layers
    if not cfg.pretrained_path:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            return WanTransformer3DModel(**_dit_kwargs(cfg, num_layers))
    root = Path(cfg.pretrained_path).expanduser()
    sub = cfg.subfolder if (root / cfg.subfolder / "config.json").exists() else None
    if not (root / (sub or "") / "config.json").exists():
        raise FileNotFoundError(f"no WanTransformer3DModel config.json under {root} (looked in {root / cfg.subfolder})")
    dit = WanTransformer3DModel.from_pretrained(root, subfolder=sub, num_layers=num_layers)
    for name in _ARCH + ("num_layers",):
        want = num_layers if name == "num_layers" else getattr(cfg, name)
        if dit.config[name] != want:
            raise ValueError(f"{root}: backbone config '{name}' is {dit.config[name]}, model config says {want}")
    return dit


class WanBackbone(nn.Module):
    """Wan DiT with LoRA, adapters after `cfg.adapter_layers` and the proprio context token."""

    def __init__(self, cfg: BackboneConfig, proprio_dim: int, num_layers: int | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.fused_layers = sorted(cfg.adapter_layers)
        self.dit = load_dit(cfg, num_layers)
        if len(self.dit.blocks) <= self.fused_layers[-1]:
            raise ValueError(f"adapter layer {self.fused_layers[-1]} needs more than {len(self.dit.blocks)} blocks")
        dim = cfg.num_attention_heads * cfg.attention_head_dim
        # lora_rank 0: no LoRA at all. A DiT that trains fully gains nothing from a low-rank copy beside
        # each weight; on this CPU its extra small matmuls cost 7% of the bench action step.
        if cfg.lora_rank > 0:
            lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_dropout=0.0, target_modules=LORA_TARGETS)
            inject_adapter_in_model(lora, self.dit)
        # Which DiT weights train: all of them (demo), or only LoRA and the video head (paper).
        for name, p in self.dit.named_parameters():
            p.requires_grad_(not cfg.freeze or "lora_" in name or name.startswith(VIDEO_HEAD))
        self.processor = FirstFrameCausalProcessor()
        for block in self.dit.blocks:
            block.attn1.set_processor(self.processor)
        self.adapters = nn.ModuleDict({str(i): ResidualAdapter(dim, cfg.adapter_dim) for i in self.fused_layers})
        self.proprio_proj = nn.Linear(proprio_dim, cfg.text_dim)
        # Activation checkpointing of the first `checkpoint_blocks` blocks of every pass (-1 = all).
        # The first `full_recompute_blocks` of those recompute everything in backward; the others
        # keep the outputs of the large matmuls and of attention and recompute only the cheap ops
        # (norms, RoPE, modulation, GELU, LoRA's rank-r products): most of the memory, little of the time.
        self.checkpoint_blocks = 0
        self.full_recompute_blocks = 0

    def context(self, text: torch.Tensor, proprio: torch.Tensor, text_mask: torch.Tensor | None = None) -> torch.Tensor:
        """[B, L+1, text_dim]: the cached text embeddings (padding zeroed, as Wan pipelines do) + the proprio token."""
        if text_mask is not None:
            text = text * text_mask[..., None].to(text.dtype)
        return torch.cat([text, self.proprio_proj(proprio.to(text.dtype))[:, None]], dim=1)

    def _block(self, i: int, mask, h, ctx, temb, rope) -> torch.Tensor:
        # The mask is set inside the (possibly checkpointed) call so recomputation sees the same mask.
        self.processor.mask = mask
        return self.dit.blocks[i](h, ctx, temb, rope)

    def forward(
        self,
        latents: torch.Tensor,
        context: torch.Tensor,
        timestep: torch.Tensor | None = None,
        first_frame_causal: bool = False,
        truncate: bool = False,
    ) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        """latents [B, C, F, H, W]; timestep [B, N] per token (None = all clean, t=0).

        Returns the adapted states h' of the fused layers ([B, N, D] each) and the
        video prediction [B, C, F, H, W] (None when `truncate` stops after the last fused block).
        """
        dit = self.dit
        b, _, f, h, w = latents.shape
        p_t, p_h, p_w = dit.config.patch_size
        grid = (f // p_t, h // p_h, w // p_w)

        # 1. Patch & position embedding
        rope = dit.rope(latents)
        x = dit.patch_embedding(latents).flatten(2).transpose(1, 2).contiguous()

        # 2. Condition embeddings: one timestep per token, or one per sample when all are clean
        if timestep is None:
            timestep = torch.zeros(b, device=latents.device)
        seq_len = timestep.shape[1] if timestep.ndim == 2 else None
        temb, temb_proj, ctx, _ = dit.condition_embedder(timestep.flatten(), context, None, timestep_seq_len=seq_len)
        temb_proj = temb_proj.unflatten(-1, (6, -1))
        mask = first_frame_causal_mask(grid[0], grid[1] * grid[2], x.device) if first_frame_causal and grid[0] > 1 else None

        # 3. Transformer blocks, adapters after the fused ones
        fused: list[torch.Tensor] = []
        last = len(dit.blocks) - 1 if not truncate else self.fused_layers[-1]
        for i in range(last + 1):
            args = (i, mask, x, ctx, temb_proj, rope)
            if (self.checkpoint_blocks < 0 or i < self.checkpoint_blocks) and torch.is_grad_enabled():
                selective = {} if i < self.full_recompute_blocks else {
                    "context_fn": functools.partial(keep_expensive_outputs, self.cfg.lora_rank)}
                x = checkpoint(self._block, *args, use_reentrant=False, **selective)
            else:
                x = self._block(*args)
            if str(i) in self.adapters:
                x = self.adapters[str(i)](x)
                fused.append(x)
        self.processor.mask = None
        if truncate:
            return fused, None

        # 4. Video head: output modulation, projection, unpatchify
        table = dit.scale_shift_table if temb.ndim == 2 else dit.scale_shift_table.unsqueeze(0)
        shift, scale = (table + temb.unsqueeze(-2)).chunk(2, dim=-2)
        if temb.ndim == 3:  # per-token: [B, N, 1, D] -> [B, N, D]
            shift, scale = shift.squeeze(-2), scale.squeeze(-2)
        x = (dit.norm_out(x.float()) * (1 + scale) + shift).type_as(x)
        x = dit.proj_out(x).reshape(b, *grid, p_t, p_h, p_w, -1)
        video = x.permute(0, 7, 1, 4, 2, 5, 3, 6).reshape(b, -1, f, h, w)
        return fused, video

    # LoRA merging: inference runs on merged weights (no extra matmuls per layer).
    def lora_layers(self) -> list[LoraLayer]:
        return [m for m in self.dit.modules() if isinstance(m, LoraLayer)]

    def merge_lora(self) -> None:
        for m in self.lora_layers():
            m.merge()

    def unmerge_lora(self) -> None:
        for m in self.lora_layers():
            m.unmerge()

    def merge_and_unload(self) -> None:
        """Fold LoRA into the base weights and drop the LoRA modules (irreversible; inference only)."""
        for name, m in list(self.dit.named_modules()):
            if isinstance(m, LoraLayer):
                m.merge()
                parent, _, attr = name.rpartition(".")
                setattr(self.dit.get_submodule(parent), attr, m.get_base_layer())

    def drop_unused_blocks(self) -> None:
        """Keep only blocks up to the last fused one (inference never runs the others)."""
        self.dit.blocks = self.dit.blocks[: self.fused_layers[-1] + 1]


def reset_rope(backbone: WanBackbone) -> None:
    """Recompute RoPE tables (non-persistent buffers, garbage after `to_empty` from meta)."""
    rope = backbone.dit.rope
    fresh = type(rope)(rope.attention_head_dim, rope.patch_size, rope.max_seq_len)
    backbone.dit.rope = fresh.to(rope.freqs_cos.device)

