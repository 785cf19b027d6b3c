"""The inference policy: raw robot observations in, raw actions out.

The model works in normalized space (min/max to [-1, 1], as the cache stores
actions and proprio); this wrapper owns the normalization both ways, the VAE
and a prepared (merged, truncated) model, so a sim loop or a server only calls `act`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLWan

from model.light_wam import LightWAM
from model.prompt_kv import PromptKV
from model.vae_single_frame import encode_single_frame


@dataclass
class MinMax:
    """Per-dimension min/max normalization to [-1, 1] (constant dimensions map to 0, as in the cache)."""

    low: torch.Tensor
    high: torch.Tensor

    @classmethod
    def from_stats(cls, stats: dict, device: str = "cpu") -> "MinMax":
        """From a LeRobot-style stats entry {"min": [...], "max": [...]}."""
        return cls(torch.tensor(stats["min"], dtype=torch.float32, device=device),
                   torch.tensor(stats["max"], dtype=torch.float32, device=device))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        span = self.high - self.low
        scaled = 2 * (x - self.low) / span.clamp(min=1e-8) - 1
        return torch.where(span > 1e-8, scaled, torch.zeros_like(scaled))  # as the cache normalizes

    def denormalize(self, y: torch.Tensor) -> torch.Tensor:
        return (y + 1) / 2 * (self.high - self.low) + self.low


class LightWAMPolicy:
    """`act(pixels, state, text)` -> raw action chunk [H, A] for one observation."""

    def __init__(self, model: LightWAM, vae: AutoencoderKLWan, state_norm: MinMax, action_norm: MinMax) -> None:
        self.model = model if model.inference_only else model.for_inference()
        self.vae = vae.eval().requires_grad_(False)
        self.prompt_kv = PromptKV(self.model)  # the task's text K/V once per prompt, not every step
        self.state_norm, self.action_norm = state_norm, action_norm
        param = next(self.model.parameters())
        self.device, self.dtype = param.device, param.dtype

    @torch.inference_mode()
    def act(self, pixels: torch.Tensor, state: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor | None = None,
            current: torch.Tensor | None = None) -> torch.Tensor:
        """pixels [3, H, W] in [-1, 1] (cameras side by side), raw state [P], cached text [L, text_dim];
        `current` [3, sH, sW]: the same frame larger, for the pixel path of a model trained with it."""
        batch = {
            "current_pixels": pixels.to(self.device, self.vae.dtype)[None, :, None],
            "proprio": self.state_norm.normalize(state.to(self.device, torch.float32))[None].to(self.dtype),
            "text": text.to(self.device, self.dtype)[None],
        }
        if text_mask is not None:
            batch["text_mask"] = text_mask.to(self.device)[None]
        if current is not None:  # the VAE reads `pixels`, the expert's pixel path the larger frame
            batch["current_latent"] = self.predict_latent(batch["current_pixels"])
            batch["current_pixels"] = current.to(self.device, self.vae.dtype)[None, :, None]
        actions = self.predict(batch)[0]
        return self.action_norm.denormalize(actions.float())

    def predict_latent(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, 1, H, W] -> the normalized latent, by the exact 2-D single-frame encode."""
        return encode_single_frame(self.vae, pixels)

    @torch.inference_mode()
    def predict(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Normalized actions [B, H, A] of a model batch; its `current_pixels` go through the VAE when it has no
        `current_latent`. The fast exact path: single-frame VAE encode, text K/V kept per prompt."""
        if "current_latent" not in batch:  # the one frame through the VAE's 2-D equivalent
            batch = dict(batch, current_latent=self.predict_latent(batch["current_pixels"]))
        return self.prompt_kv.predict_actions(batch)
