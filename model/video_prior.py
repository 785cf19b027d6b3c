"""The video prior: the Wan DiT alone, trained on all its weights with Light-WAM's video objective.

What pretraining on action-free video trains, and what Light-WAM later loads as
its frozen backbone (`model.backbone.pretrained_path`). The forward is
`WanBackbone`'s (per-token timesteps, first-frame-causal attention) with no
LoRA; its adapters exist but stay frozen at their zero-initialised identity, and
the context is the text alone: the proprio token is Light-WAM's addition, as
Wan2.1 itself was pretrained on text only. Only `dit` is saved (`save_pretrained`).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from model.backbone import WanBackbone
from model.video_objective import masked_video_loss, noise_clip, sample_future


class VideoPrior(nn.Module):
    def __init__(self, backbone_cfg, flow_shift: float) -> None:
        super().__init__()
        self.backbone = WanBackbone(replace(backbone_cfg, freeze=False, lora_rank=0), proprio_dim=1)
        for name, p in self.backbone.named_parameters():
            p.requires_grad_(name.startswith("dit."))
        self.flow_shift = flow_shift

    @property
    def dit(self):
        return self.backbone.dit

    def context(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        text, mask = batch["text"], batch.get("text_mask")
        return text * mask[..., None].to(text.dtype) if mask is not None else text

    def tokens_per_frame(self, video: torch.Tensor) -> int:
        p = self.backbone.cfg.patch_size
        return (video.shape[3] // p[1]) * (video.shape[4] // p[2])

    def forward(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> torch.Tensor:
        """The flow-matching loss on frames 1.. of `video_latents` given the clean frame 0 and the text."""
        video = batch["video_latents"]
        noised = noise_clip(video, self.flow_shift, self.tokens_per_frame(video), generator)
        _, pred = self.backbone(noised.x_t, self.context(batch), noised.timestep, first_frame_causal=True)
        return masked_video_loss(pred, noised.target, batch["video_frame_mask"])

    @torch.no_grad()
    def sample_future(self, batch: dict[str, torch.Tensor], steps: int, generator: torch.Generator | None = None
                      ) -> torch.Tensor:
        """Frames 1.. generated from noise by Euler steps on the shifted sigma schedule; frame 0 is given."""
        video = batch["video_latents"]
        return sample_future(self.backbone, video[:, :, :1], video.shape[2], self.context(batch), self.flow_shift,
                             steps, generator)
