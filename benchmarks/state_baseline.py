"""A yardstick for benchmarks/action_error.py: what the robot state and the instruction explain, with no image.

The blind yardstick (the task's mean chunk) knows neither the scene nor where the
robot is. Much of an expert's chunk follows from the robot's own state alone (the
phase of the motion: where the hand is, whether the gripper is closed), which the
policy also receives. This fits a small MLP from (normalized state, which
instruction) to the normalized chunk on the same samples, with the same number of
steps and samples per step as the model's training, so a model's error can be read
against a policy that never looks at the cameras. Whatever the model does better
than this, it read from the images.
"""

from __future__ import annotations

import torch
from torch import nn


def _text_code(text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """[B, L, D], [B, L] -> [B, D]: the mean over real tokens, a fingerprint of the instruction."""
    m = text_mask.to(text.dtype)[..., None]
    return (text * m).sum(1) / m.sum(1).clamp(min=1.0)


class StateOnlyPolicy(nn.Module):
    """(proprio [B, P], instruction) -> chunk [B, H, A]; the instruction enters as a one-hot of the known tasks."""

    def __init__(self, task_codes: torch.Tensor, proprio_dim: int, horizon: int, action_dim: int,
                 hidden: int = 256) -> None:
        super().__init__()
        self.register_buffer("task_codes", task_codes)  # [K, D]: one text fingerprint per task
        self.horizon, self.action_dim = horizon, action_dim
        self.net = nn.Sequential(nn.Linear(proprio_dim + len(task_codes), hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, horizon * action_dim))

    def task_onehot(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, D] text fingerprints -> [B, K]: the nearest known task."""
        nearest = torch.cdist(codes.float(), self.task_codes).argmin(1)
        return nn.functional.one_hot(nearest, len(self.task_codes)).float()

    def forward(self, proprio: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([proprio.float(), onehot], 1)).view(-1, self.horizon, self.action_dim)

    @torch.inference_mode()
    def predict_actions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The same entry point as LightWAM's, on the keys it needs."""
        return self(batch["proprio"], self.task_onehot(_text_code(batch["text"], batch["text_mask"])))


def fit_state_only(samples: list[dict], steps: int, batch_size: int, lr: float = 3e-4,
                   weighted_steps: int = 0, seed: int = 0) -> StateOnlyPolicy:
    """AdamW on the masked chunk MSE (the first `weighted_steps` steps, 0 = all, as the model's loss)."""
    proprio = torch.stack([s["proprio"] for s in samples]).float()
    actions = torch.stack([s["actions"] for s in samples]).float()
    mask = torch.stack([s["action_mask"] for s in samples]).float()
    if weighted_steps > 0:
        mask = mask * (torch.arange(mask.shape[1]) < weighted_steps)
    codes = torch.stack([_text_code(s["text"][None], s["text_mask"][None])[0] for s in samples]).float()
    task_codes = torch.unique(codes, dim=0)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    policy = StateOnlyPolicy(task_codes, proprio.shape[1], actions.shape[1], actions.shape[2])
    onehot = policy.task_onehot(codes)
    opt = torch.optim.AdamW(policy.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, len(samples), (batch_size,), generator=gen)
        sq = (policy(proprio[idx], onehot[idx]) - actions[idx]).pow(2).mean(-1)
        loss = (sq * mask[idx]).sum() / mask[idx].sum().clamp(min=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return policy.eval()
