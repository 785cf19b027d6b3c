"""Residual bottleneck adapters inserted after chosen DiT blocks (paper: 8, 16, 24)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class ResidualAdapter(nn.Module):
    """h' = h + up(GELU(down(LayerNorm(h)))); `up` starts at zero so h' == h at initialisation.

    The zero start keeps a pretrained backbone's behaviour intact on step 0;
    h' replaces the residual stream and is what the action expert reads.
    """

    def __init__(self, dim: int, bottleneck: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(F.gelu(self.down(self.norm(h))))
