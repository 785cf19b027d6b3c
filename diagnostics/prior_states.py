"""What the expert reads, for the goal probe: a DiT's hidden states on a frame's latent (issue 32).

Light-WAM's expert reads the adapted states of the fused blocks from one clean
current frame and the instruction. Before training the adapters are the
identity, so these are the DiT's own states: a pretrained prior's, or a random
one's. `--vae` and `--prior` take what the cache and the backbone take: a
diffusers directory or a `models:/NAME/VERSION` URI (resolved in the preset's
MLflow store).
"""

from __future__ import annotations

from dataclasses import replace

import torch

from model.backbone import WanBackbone
from model.vae import build_vae
from pipeline.config import Config
from stages.text import PromptEncoder, prompt_for


def local_path(path: str, cfg: Config) -> str:
    """A directory for `path`: itself, or the download of a `models:/` URI."""
    from pipeline.pretrained import is_uri, resolve_pretrained

    return str(resolve_pretrained(path, cfg)) if is_uri(path) else path


def load_vae(cfg: Config, path: str):
    """The cache's VAE: fitted (`path`) or random (`path` empty, the preset's seed)."""
    return build_vae(replace(cfg.cache.vae, pretrained_path=local_path(path, cfg) if path else ""))


def load_backbone(cfg: Config, path: str) -> WanBackbone:
    """The DiT up to the last fused block, as Light-WAM builds it (no LoRA: the states before any training)."""
    bb = replace(cfg.model.backbone, pretrained_path=local_path(path, cfg) if path else "", lora_rank=0, freeze=True)
    return WanBackbone(bb, proprio_dim=cfg.model.proprio_dim, num_layers=max(bb.adapter_layers) + 1).eval()


def text_context(cfg: Config, task: str) -> torch.Tensor:
    """[1, L, D]: the task's instruction as the cache embeds it (padding zeroed); no proprio token, as the prior saw."""
    emb, _ = PromptEncoder(cfg.cache.text).encode([prompt_for(cfg.cache.text, task)])
    return torch.from_numpy(emb)


@torch.no_grad()
def dit_states(backbone: WanBackbone, latents: torch.Tensor, context: torch.Tensor,
               batch: int = 64) -> dict[int, torch.Tensor]:
    """[N, z, h, w] current-frame latents -> {fused layer: [N, tokens, D]}: each fused block's states, frame clean."""
    out: dict[int, list[torch.Tensor]] = {layer: [] for layer in backbone.fused_layers}
    for i in range(0, len(latents), batch):
        x = latents[i:i + batch, :, None]
        fused, _ = backbone(x, context.expand(len(x), -1, -1), truncate=True)
        for layer, states in zip(backbone.fused_layers, fused):
            out[layer].append(states.float())
    return {layer: torch.cat(parts) for layer, parts in out.items()}
