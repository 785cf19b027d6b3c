"""The Wan VAE (diffusers `AutoencoderKLWan`): load from disk or build small and seeded.

Shared by the offline cache (encode clips) and the inference policy (encode the
current frame), so both produce latents in exactly the same normalized space:
`(mu - latents_mean) / latents_std` per channel, as diffusers' Wan pipelines do.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from diffusers import AutoencoderKLWan

from model.config import VaeConfig


def build_vae(cfg: VaeConfig, device: str = "cpu", dtype: torch.dtype = torch.float32) -> AutoencoderKLWan:
    """From `cfg.pretrained_path` (a diffusers dir, `vae/` subfolder if present) or random with `cfg.seed`."""
    if cfg.pretrained_path:
        root = Path(cfg.pretrained_path).expanduser()
        sub = cfg.subfolder if (root / cfg.subfolder / "config.json").exists() else None
        if not (root / (sub or "") / "config.json").exists():
            raise FileNotFoundError(
                f"no AutoencoderKLWan config.json under {root} (looked in {root / cfg.subfolder} and {root})"
            )
        vae = AutoencoderKLWan.from_pretrained(root, subfolder=sub, torch_dtype=dtype)
    else:
        temporal, spatial = compression(cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            vae = AutoencoderKLWan(
                base_dim=cfg.base_dim,
                z_dim=cfg.z_dim,
                dim_mult=list(cfg.dim_mult),
                temperal_downsample=list(cfg.temporal_downsample),
                num_res_blocks=cfg.num_res_blocks,
                scale_factor_temporal=temporal,
                scale_factor_spatial=spatial,
            )
        if dtype != torch.float32:
            vae = vae.to(dtype)
    return vae.to(device).eval().requires_grad_(False)


def compression(vae_config: dict | VaeConfig) -> tuple[int, int]:
    """(temporal, spatial) compression of a Wan VAE, from its config: 1 + (T-1)/t latent frames of H/s x W/s."""
    if isinstance(vae_config, VaeConfig):
        dim_mult, temporal = list(vae_config.dim_mult), list(vae_config.temporal_downsample)
    else:
        dim_mult, temporal = list(vae_config["dim_mult"]), list(vae_config["temperal_downsample"])
    if len(temporal) != len(dim_mult) - 1:
        raise ValueError(f"a Wan VAE has one temporal_downsample flag per level after the first: dim_mult {dim_mult} "
                         f"needs {len(dim_mult) - 1}, got {temporal}")
    if sum(bool(t) for t in temporal) != 2:
        raise ValueError(f"temporal_downsample {temporal}: the Wan VAE encodes frame 0 alone, then chunks of 4 "
                         "frames, so exactly two levels must halve time (4x)")
    return 2 ** sum(bool(t) for t in temporal), 2 ** (len(dim_mult) - 1)


def vae_identity(vae: AutoencoderKLWan) -> dict:
    """Config plus a hash of the weights: what makes two VAEs produce the same latents."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    config = {k: v for k, v in dict(vae.config).items() if not k.startswith("_")}
    return {"config": json.loads(json.dumps(config, default=str)), "weights_sha256": digest.hexdigest()}


def _latent_stats(vae: AutoencoderKLWan, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean, device=like.device, dtype=like.dtype).view(shape)
    std = torch.tensor(vae.config.latents_std, device=like.device, dtype=like.dtype).view(shape)
    return mean, std


@torch.no_grad()
def encode(vae: AutoencoderKLWan, pixels: torch.Tensor) -> torch.Tensor:
    """pixels [B, 3, T, H, W] in [-1, 1] -> normalized latents [B, z, 1 + (T-1)/4, H/s, W/s] (s: 8 for Wan2.1).

    Uses the posterior mean (deterministic), so the cache does not depend on a noise draw.
    """
    mu = vae.encode(pixels.to(vae.dtype)).latent_dist.mode()
    mean, std = _latent_stats(vae, mu)
    return (mu - mean) / std


@torch.no_grad()
def decode(vae: AutoencoderKLWan, latents: torch.Tensor) -> torch.Tensor:
    """The inverse of `encode`, for pictures a person looks at: returns pixels in [-1, 1]."""
    mean, std = _latent_stats(vae, latents)
    return vae.decode(latents * std + mean).sample.clamp(-1, 1)
