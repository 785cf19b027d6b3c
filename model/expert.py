"""StateFusionActionExpert: the whole action chunk from adapted backbone states, in one forward.

Per fused layer the tokens are pooled (16 learned queries, 8-head attention,
merged by softmax over zero-init logits, so the merge starts as a plain mean)
and compressed; the layers are concatenated and fused; a sinusoidal embedding
of the step index k = 0..H-1 turns the one fused vector into H step vectors; a
head regresses each step's action (normalized space, no diffusion).

Wan's tokens carry their position only through RoPE inside attention, and the
query pooling is blind to token order, so the pooled vector says what is in the
frame more readily than where. `token_positions` (off in the paper's expert) adds
a learned projection of each token's (row, column) sinusoid before pooling, so a
small goal marker's place on the grid can reach the actions.

The robot state enters the paper's model only as one context token the image
tokens cross-attend to, so it reaches the actions through them and weakly.
`state_input` (off in the paper's expert) adds an MLP of the normalized state to
the fused vector, a direct path from the state to every step of the chunk.

`pixel_input` (off in the paper's expert) adds, the same way, an MLP of keypoints
read from the current frame's pixels (`model.pixel_keypoints`): a path for where
objects and goals are that bypasses the VAE's 8x8 compression and the pooling.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from model.pixel_keypoints import PixelKeypoints
from pipeline.config import ExpertConfig, Pooling


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


def grid_sinusoid(grid: tuple[int, int, int], dim: int, device: torch.device) -> torch.Tensor:
    """[F*h*w, dim]: sin/cos of each token's row (first half) and column (second half), flattened as the
    backbone flattens its patch grid (frame-major); tokens of different frames share their (row, column) code."""
    f, h, w = grid
    quarter = dim // 4
    freqs = torch.exp(-math.log(100.0) * torch.arange(quarter, device=device, dtype=torch.float32) / quarter)

    def axis(n: int) -> torch.Tensor:
        ang = torch.arange(n, device=device, dtype=torch.float32)[:, None] * freqs
        return torch.cat([torch.sin(ang), torch.cos(ang)], dim=1)  # [n, 2 * quarter]

    rows = axis(h)[:, None, :].expand(h, w, -1)
    cols = axis(w)[None, :, :].expand(h, w, -1)
    code = torch.cat([rows, cols], dim=-1).reshape(h * w, -1)
    code = torch.nn.functional.pad(code, (0, dim - code.shape[1]))
    return code.repeat(f, 1)


class StateFusionActionExpert(nn.Module):
    """list of L tensors [B, N, D] (adapted states of the fused layers) -> actions [B, H, A]."""

    def __init__(self, cfg: ExpertConfig, dim: int, num_layers: int, horizon: int, action_dim: int,
                 proprio_dim: int = 0, text_dim: int = 0) -> None:
        super().__init__()
        self.horizon = horizon
        self.step_dim = cfg.step_embed_dim
        pool = (lambda: QueryPool(dim, cfg.num_queries, cfg.num_heads)) if cfg.pooling == Pooling.query else (lambda: MeanPool(dim))
        self.pools = nn.ModuleList([pool() for _ in range(num_layers)])
        # zero-init: a model with token positions starts as the one without
        self.position_proj = nn.Linear(dim, dim) if cfg.token_positions else None
        if self.position_proj is not None:
            nn.init.zeros_(self.position_proj.weight)
            nn.init.zeros_(self.position_proj.bias)
        self.compressors = nn.ModuleList([mlp(dim, cfg.compress_dim, cfg.compress_dim) for _ in range(num_layers)])
        fused = num_layers * cfg.compress_dim
        self.fuse = nn.Sequential(nn.LayerNorm(fused), nn.Linear(fused, cfg.hidden_dim))
        self.res_blocks = nn.Sequential(*[ResidualMLP(cfg.hidden_dim) for _ in range(cfg.num_res_blocks)])
        self.step_embed = mlp(cfg.step_embed_dim, cfg.hidden_dim, cfg.hidden_dim)
        self.head = mlp(cfg.hidden_dim, cfg.hidden_dim, action_dim)
        # no input LayerNorm (it would erase the state's mean over its few, already normalized features);
        # zero-init output, built last (the rest keeps its init): a model with it starts as the one without
        self.state_proj = None
        if cfg.state_input:
            if proprio_dim <= 0:
                raise ValueError("state_input needs the state's width (proprio_dim > 0)")
            self.state_proj = nn.Sequential(nn.Linear(proprio_dim, cfg.hidden_dim), nn.GELU(), nn.Linear(cfg.hidden_dim, cfg.hidden_dim))
            nn.init.zeros_(self.state_proj[-1].weight)
            nn.init.zeros_(self.state_proj[-1].bias)
        # built after everything else and zero-init at the output, for the same reason
        self.pixel_encoder, self.pixel_proj = None, None
        if cfg.pixel_film and (not cfg.pixel_input or text_dim <= 0):
            raise ValueError("pixel_film conditions the pixel path on the instruction: it needs pixel_input and "
                             "the text embedding's width (text_dim > 0)")
        if cfg.pixel_input:
            self.pixel_encoder = PixelKeypoints(cfg.pixel_keypoints, condition_dim=text_dim if cfg.pixel_film else 0)
            self.pixel_proj = nn.Sequential(nn.Linear(self.pixel_encoder.out_dim, cfg.hidden_dim), nn.GELU(),
                                            nn.Linear(cfg.hidden_dim, cfg.hidden_dim))
            nn.init.zeros_(self.pixel_proj[-1].weight)
            nn.init.zeros_(self.pixel_proj[-1].bias)

    def forward(self, states: list[torch.Tensor], grid: tuple[int, int, int] | None = None,
                proprio: torch.Tensor | None = None, pixels: torch.Tensor | None = None,
                instruction: torch.Tensor | None = None) -> torch.Tensor:
        """`grid` (frames, rows, columns of the patch grid) is needed with `token_positions`,
        `proprio` [B, P] (the normalized robot state) with `state_input`, `pixels` (the current
        frame [B, 3, 1, H, W] in [-1, 1]) with `pixel_input`, `instruction` [B, text_dim] (the mean
        text embedding) with `pixel_film`."""
        if len(states) != len(self.pools):
            raise ValueError(f"expert reads {len(self.pools)} layers, got {len(states)}")
        # 0. Token positions on the patch grid, shared by the layers
        if self.position_proj is not None:
            if grid is None or grid[0] * grid[1] * grid[2] != states[0].shape[1]:
                raise ValueError(f"token_positions needs the patch grid of the {states[0].shape[1]} tokens, got {grid}")
            code = grid_sinusoid(grid, states[0].shape[-1], states[0].device).to(states[0].dtype)
            pos = self.position_proj(code)
            states = [h + pos for h in states]
        # 1. Pool and compress each layer
        z = torch.cat([comp(pool(h)) for h, pool, comp in zip(states, self.pools, self.compressors)], dim=-1)
        # 2. Fuse the layers into one vector (plus the robot state and the frame's keypoints, when enabled)
        z = self.fuse(z)
        if self.state_proj is not None:
            if proprio is None:
                raise ValueError("state_input needs the robot state (proprio)")
            z = z + self.state_proj(proprio.to(z.dtype))
        if self.pixel_proj is not None:
            if pixels is None:
                raise ValueError("pixel_input needs the current frame's pixels (a cache built with "
                                 "cache.current_frames=true, or `current_pixels` at inference)")
            condition = None
            if self.pixel_encoder.film is not None:
                if instruction is None:
                    raise ValueError("pixel_film needs the instruction's mean text embedding")
                condition = nn.functional.layer_norm(instruction.float(), instruction.shape[-1:])  # unit scale
            z = z + self.pixel_proj(self.pixel_encoder(pixels, condition).to(z.dtype))
        z = self.res_blocks(z)
        # 3. One vector per step, then the action head
        steps = self.step_embed(step_sinusoid(self.horizon, self.step_dim, z.device).to(z.dtype))
        return self.head(z[:, None, :] + steps[None])
