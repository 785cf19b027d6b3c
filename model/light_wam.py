"""Light-WAM: the backbone, the action expert and the two training objectives, composed.

Batch: a dict of tensors, the contract between the offline cache and the model.

| key              | shape              | dtype   | meaning                                                    |
|------------------|--------------------|---------|------------------------------------------------------------|
| `video_latents`  | [B, 16, F, h, w]   | float32 | normalized VAE latents of the clip, 2x2 avg-pooled (F = 3) |
| `video_frame_mask` | [B, F]           | bool    | True where a latent frame has at least one real source frame |
| `current_latent` | [B, 16, 1, H, W]   | float32 | full-resolution normalized latent of the current frame     |
| `text`           | [B, L, text_dim]   | float32 | cached text-encoder embeddings (umT5: L=128, 4096)         |
| `text_mask`      | [B, L]             | bool    | optional; True on real tokens (padding is zeroed)          |
| `proprio`        | [B, P]             | float32 | normalized proprio state at the current frame              |
| `actions`        | [B, H, A]          | float32 | normalized action chunk (training only)                    |
| `action_mask`    | [B, H]             | bool    | True where the action is real, not end-of-episode padding  |
| `current_pixels` | [B, 3, 1, Hpx, Wpx] | float32 | the current frame in [-1, 1]; only with `model.shortcut` |

`predict_actions` needs only `current_latent` (or `current_pixels` plus a VAE),
`text`, optional `text_mask`, and `proprio` (and `current_pixels` with the shortcut).
The cache's side of this contract is `stages.schema`.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKLWan
from torch import nn

from model.backbone import WanBackbone, reset_rope
from model.config import ModelConfig
from model.expert import StateFusionActionExpert
from model.frozen_weights import narrow_frozen_linears, widen_frozen_linears
from model.shortcut import Shortcut
from model.vae import encode
from model.video_objective import masked_video_loss, noise_clip, sample_future


def masked_action_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, weighted_steps: int) -> torch.Tensor:
    """MSE over real actions of the first `weighted_steps` steps of the chunk (0 = all steps)."""
    m = mask.to(torch.float32)
    if weighted_steps > 0:
        m = m * (torch.arange(m.shape[1], device=m.device) < weighted_steps)
    err = (pred.float() - target.float()).pow(2).mean(-1)  # [B, H]
    return (err * m).sum() / m.sum().clamp(min=1.0)


class LightWAM(nn.Module):
    """`forward(batch)` -> losses (training); `predict_actions(batch)` -> [B, H, A] (inference)."""

    def __init__(self, cfg: ModelConfig, inference: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        bb = cfg.backbone
        # inference: build only the blocks the action path runs (up to the last fused one)
        self.backbone = WanBackbone(bb, cfg.proprio_dim, num_layers=max(bb.adapter_layers) + 1 if inference else None)
        dim = bb.num_attention_heads * bb.attention_head_dim
        self.expert = StateFusionActionExpert(cfg.expert, dim, len(bb.adapter_layers), cfg.action_horizon, cfg.action_dim)
        # not in the paper: built last, so the paper's modules draw the same initial weights with or without it
        self.shortcut = Shortcut(cfg.shortcut, cfg.proprio_dim, cfg.expert.hidden_dim) if cfg.shortcut.enabled else None
        self.trainable_names = [n for n, p in self.named_parameters() if p.requires_grad]
        self.inference_only = inference

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None,
                branch: str = "both") -> dict[str, torch.Tensor]:
        """Weighted losses of `branch`: "both", or "video" / "action" alone.

        Training may run the branches as two forward/backward passes: the video
        branch's activations are then freed before the action branch builds its own,
        which lowers the peak memory at no extra compute; the summed gradients are the same.
        """
        if self.inference_only:
            raise RuntimeError("this LightWAM was prepared for inference (truncated/merged); it cannot train")
        if branch not in ("both", "video", "action"):
            raise ValueError(f"branch must be 'both', 'video' or 'action', got {branch!r}")
        cfg, bb = self.cfg, self.backbone
        ctx = bb.context(batch["text"], batch["proprio"], batch.get("text_mask"))
        out: dict[str, torch.Tensor] = {}
        loss = ctx.new_zeros(())

        # 1. Video branch: flow matching on the downsampled clip, first-frame-causal attention
        if branch in ("both", "video"):
            video = batch["video_latents"]
            tokens_per_frame = (video.shape[3] // bb.cfg.patch_size[1]) * (video.shape[4] // bb.cfg.patch_size[2])
            noised = noise_clip(video, cfg.flow_shift, tokens_per_frame, generator)
            _, pred = bb(noised.x_t, ctx, noised.timestep, first_frame_causal=True)
            video_loss = masked_video_loss(pred, noised.target, batch["video_frame_mask"])
            loss = loss + cfg.video_loss_weight * video_loss
            out["video_loss"] = video_loss.detach()

        # 2. Action branch: the clean current frame at full resolution, stop after the last fused block
        if branch in ("both", "action"):
            fused, _ = bb(batch["current_latent"], ctx, None, truncate=True)
            actions = self.expert(fused, self.shortcut_offset(batch))
            action_loss = masked_action_loss(actions, batch["actions"], batch["action_mask"], cfg.action_weighted_steps)
            loss = loss + cfg.action_loss_weight * action_loss
            out["action_loss"] = action_loss.detach()

        out["loss"] = loss
        return out

    @torch.inference_mode()
    def predict_actions(self, batch: dict[str, torch.Tensor], vae: AutoencoderKLWan | None = None) -> torch.Tensor:
        """Normalized action chunk [B, H, A]: (VAE encode), one truncated backbone pass, the expert."""
        latent = batch.get("current_latent")
        if latent is None:
            if vae is None:
                raise ValueError("predict_actions: batch has no 'current_latent' and no VAE was given for 'current_pixels'")
            latent = encode(vae, batch["current_pixels"])
        bb = self.backbone
        ctx = bb.context(batch["text"], batch["proprio"], batch.get("text_mask"))
        fused, _ = bb(latent.to(ctx.dtype), ctx, None, truncate=True)
        return self.expert(fused, self.shortcut_offset(batch))

    @torch.no_grad()
    def sample_future(self, batch: dict[str, torch.Tensor], frames: int, steps: int,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """What the video branch imagines next: [B, C, frames, h, w] latents, frame 0 the given
        `video_latents[:, :, 0]` (pooled as the cache pools the clip), the rest generated from noise
        under the context the branch trains with (text + proprio). Needs the full model (video head)."""
        if self.inference_only:
            raise RuntimeError("this LightWAM was prepared for inference (truncated/merged); it has no video head")
        bb = self.backbone
        ctx = bb.context(batch["text"], batch["proprio"], batch.get("text_mask"))
        first = batch["video_latents"][:, :, :1].to(ctx.dtype)
        return sample_future(bb, first, frames, ctx, self.cfg.flow_shift, steps, generator)

    def shortcut_offset(self, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
        """What `model.shortcut` adds to the expert's fused vector; None in the paper's model."""
        if self.shortcut is None:
            return None
        return self.shortcut(batch["proprio"], batch.get("current_pixels"))

    def for_inference(self) -> "LightWAM":
        """Merge LoRA into the weights, drop LoRA modules and unused blocks; frozen, eval. Irreversible.

        Unused blocks go first (nothing is widened or merged for them); frozen weights stored narrow are then
        widened to the model's dtype, so the merge is exact."""
        self.backbone.drop_unused_blocks()
        widen_frozen_linears(self.backbone.dit.blocks, getattr(torch, self.cfg.dtype))
        self.backbone.merge_and_unload()
        self.inference_only = True
        return self.eval().requires_grad_(False)


def _fast_random_init(model: LightWAM, seed: int) -> None:
    """Cheap uniform init for a model materialized from `meta` (benchmarks: the values do not matter)."""
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim >= 2:
                bound = p[0].numel() ** -0.5
                p.uniform_(-bound, bound, generator=gen)
            else:
                p.fill_(1.0 if name.endswith("weight") else 0.0)
    reset_rope(model.backbone)


def build_model(cfg: ModelConfig, inference: bool = False, fast_init: bool = False) -> LightWAM:
    """The composed model on `cfg.device` / `cfg.dtype`.

    `inference` builds only the blocks the action path needs; `fast_init` (random
    backbone only) builds on `meta` and fills weights cheaply instead of the
    library's per-layer init, which is what makes the 1.4B paper model quick to build.
    """
    dtype = getattr(torch, cfg.dtype)
    if not fast_init or cfg.backbone.pretrained_path:
        model = LightWAM(cfg, inference).to(device=cfg.device, dtype=dtype)
    else:
        with torch.device("meta"):
            model = LightWAM(cfg, inference)
        model = model.to_empty(device=cfg.device).to(dtype)
        _fast_random_init(model, cfg.backbone.seed)
    if cfg.backbone.frozen_dtype:  # after the dtype cast above, which would widen them again
        narrow_frozen_linears(model.backbone.dit.blocks, getattr(torch, cfg.backbone.frozen_dtype))
    return model
