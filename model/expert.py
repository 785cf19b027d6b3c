"""StateFusionActionExpert: the whole action chunk from adapted backbone states, in one forward.

Per fused layer the tokens are pooled (16 learned queries, 8-head attention,
merged by softmax over zero-init logits, so the merge starts as a plain mean)
and compressed; the layers are concatenated and fused; a sinusoidal embedding
of the step index k = 0..H-1 turns the one fused vector into H step vectors; a
head regresses each step's action (normalized space, no diffusion).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.config import ExpertConfig, Pooling


class QueryPool(nn.Module):
    """[B, N, D] -> [B, D]: learned queries attend to the tokens; their outputs are softmax-merged."""

    def __init__(self, dim: int, num_queries: int, num_heads: int) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.queries = nn.Parameter(torch.randn(num_queries, dim) * dim**-0.5)
        self.attn = nn.MultiheadAttention(dim, num_heads, batch_first=True)
        self.merge_logits = nn.Parameter(torch.zeros(num_queries))
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.norm_in(tokens)
        q = self.queries.unsqueeze(0).expand(x.shape[0], -1, -1).to(x.dtype)
        out, _ = self.attn(q, x, x, need_weights=False)
        pooled = torch.einsum("q,bqd->bd", self.merge_logits.softmax(0).to(out.dtype), out)
        return self.norm_out(pooled)


class MeanPool(nn.Module):
    """Ablation: the token mean, with the same norms as QueryPool."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(dim)
        self.norm_out = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.norm_out(self.norm_in(tokens).mean(1))


def mlp(dim_in: int, hidden: int, dim_out: int) -> nn.Sequential:
    """LN -> Linear -> GELU -> Linear: the expert's one building block."""
    return nn.Sequential(nn.LayerNorm(dim_in), nn.Linear(dim_in, hidden), nn.GELU(), nn.Linear(hidden, dim_out))


class ResidualMLP(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.mlp = mlp(dim, dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mlp(x)


def step_sinusoid(horizon: int, dim: int, device: torch.device) -> torch.Tensor:
    """[H, dim] sin/cos of the step index k (computed, not stored: nothing to checkpoint)."""
    k = torch.arange(horizon, device=device, dtype=torch.float32)[:, None]
    freqs = torch.exp(-math.log(10000.0) * torch.arange(dim // 2, device=device, dtype=torch.float32) / (dim // 2))
    return torch.cat([torch.sin(k * freqs), torch.cos(k * freqs)], dim=1)


class StateFusionActionExpert(nn.Module):
    """list of L tensors [B, N, D] (adapted states of the fused layers) -> actions [B, H, A]."""

    def __init__(self, cfg: ExpertConfig, dim: int, num_layers: int, horizon: int, action_dim: int) -> None:
        super().__init__()
        self.horizon = horizon
        self.step_dim = cfg.step_embed_dim
        pool = (lambda: QueryPool(dim, cfg.num_queries, cfg.num_heads)) if cfg.pooling == Pooling.query else (lambda: MeanPool(dim))
        self.pools = nn.ModuleList([pool() for _ in range(num_layers)])
        self.compressors = nn.ModuleList([mlp(dim, cfg.compress_dim, cfg.compress_dim) for _ in range(num_layers)])
        fused = num_layers * cfg.compress_dim
        self.fuse = nn.Sequential(nn.LayerNorm(fused), nn.Linear(fused, cfg.hidden_dim))
        self.res_blocks = nn.Sequential(*[ResidualMLP(cfg.hidden_dim) for _ in range(cfg.num_res_blocks)])
        self.step_embed = mlp(cfg.step_embed_dim, cfg.hidden_dim, cfg.hidden_dim)
        self.head = mlp(cfg.hidden_dim, cfg.hidden_dim, action_dim)

    def forward(self, states: list[torch.Tensor], fused_offset: torch.Tensor | None = None) -> torch.Tensor:
        """`fused_offset` [B, hidden_dim]: added to the fused vector (`model.shortcut`; None in the paper)."""
        if len(states) != len(self.pools):
            raise ValueError(f"expert reads {len(self.pools)} layers, got {len(states)}")
        # 1. Pool and compress each layer
        z = torch.cat([comp(pool(h)) for h, pool, comp in zip(states, self.pools, self.compressors)], dim=-1)
        # 2. Fuse the layers into one vector
        z = self.fuse(z)
        if fused_offset is not None:
            z = z + fused_offset.to(z.dtype)
        z = self.res_blocks(z)
        # 3. One vector per step, then the action head
        steps = self.step_embed(step_sinusoid(self.horizon, self.step_dim, z.device).to(z.dtype))
        return self.head(z[:, None, :] + steps[None])
