"""Min/max normalization of actions and robot state to [-1, 1], the space the model works in."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class MinMax:
    """Per-dimension min/max to [-1, 1]; constant dimensions map to 0."""

    low: torch.Tensor
    high: torch.Tensor

    @classmethod
    def from_stats(cls, stats: dict, device: str = "cpu") -> "MinMax":
        """From a LeRobot-style stats entry {"min": [...], "max": [...]}."""
        return cls(torch.tensor(stats["min"], dtype=torch.float32, device=device),
                   torch.tensor(stats["max"], dtype=torch.float32, device=device))

    def normalize(self, x) -> torch.Tensor:
        x = torch.as_tensor(x, dtype=torch.float32, device=self.low.device)
        span = self.high - self.low
        scaled = 2 * (x - self.low) / span.clamp(min=1e-8) - 1
        return torch.where(span > 1e-8, scaled, torch.zeros_like(scaled))

    def denormalize(self, y) -> torch.Tensor:
        y = torch.as_tensor(y, dtype=torch.float32, device=self.low.device)
        return (y + 1) / 2 * (self.high - self.low) + self.low
