"""The learners the goal probe fits: reading a position (x, y, z in metres) back from features.

Ridge regression on the flattened features, and a small conv net (on pixels it first brings the image
to the latent grid); each is trained on a few layouts and scored on others (`diagnostics/goal_probe.py`).
"""

from __future__ import annotations

import torch
from torch import nn

RADIUS_M = 0.05  # reach's and push's success radius


def ridge(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor) -> torch.Tensor:
    """Closed-form ridge on flattened features; the penalty picked on a fifth of the training layouts."""
    def fit(x, y, alpha):
        mean_x, mean_y = x.mean(0), y.mean(0)
        xc = (x - mean_x).double()
        gram = xc @ xc.T + alpha * torch.eye(len(x), dtype=torch.float64)  # dual form: n << features
        w = xc.T @ torch.linalg.solve(gram, (y - mean_y).double())
        return lambda z: ((z - mean_x).double() @ w).float() + mean_y
    x, tx = train_x.flatten(1), test_x.flatten(1)
    cut = max(len(x) * 4 // 5, 2)
    alphas = [10.0 ** k for k in range(-2, 6)]
    errors = [(fit(x[:cut], train_y[:cut], a)(x[cut:]) - train_y[cut:]).norm(dim=1).mean() for a in alphas]
    return fit(x, train_y, alphas[int(torch.stack(errors).argmin())])(tx)


def conv_probe(in_channels: int, from_pixels: bool) -> nn.Module:
    """A small conv net; on pixels three stride-2 convs first bring the image to the latent grid (1/8)."""
    stem: list[nn.Module] = []
    channels = in_channels
    if from_pixels:
        for out in (32, 48, 64):
            stem += [nn.Conv2d(channels, out, 3, stride=2, padding=1), nn.GELU()]
            channels = out
    return nn.Sequential(
        *stem,
        nn.Conv2d(channels, 64, 3, padding=1), nn.GELU(),
        nn.Conv2d(64, 64, 3, padding=1), nn.GELU(),
        nn.AdaptiveAvgPool2d((4, 8)), nn.Flatten(),
        nn.Linear(64 * 32, 128), nn.GELU(), nn.Linear(128, 6),
    )


def train_conv(train_x, train_y, test_x, from_pixels: bool, updates: int, seed: int = 0) -> torch.Tensor:
    """AdamW on standardized targets, minibatches of up to 32, a fixed number of updates (no early stopping)."""
    torch.manual_seed(seed)
    mean, std = train_y.mean(0), train_y.std(0) + 1e-6
    y = (train_y - mean) / std
    net = conv_probe(train_x.shape[1], from_pixels)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-2)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, updates)
    batch = min(32, len(train_x))
    order = torch.randperm(len(train_x))
    for step in range(updates):
        start = (step * batch) % len(train_x)
        if start + batch > len(train_x):
            order, start = torch.randperm(len(train_x)), 0
        idx = order[start:start + batch]
        loss = nn.functional.mse_loss(net(train_x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        return net(test_x) * std + mean


def score(pred: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """Mean Euclidean error in cm, and the share within RADIUS_M."""
    err = (pred - truth).norm(dim=1)
    return float(err.mean() * 100), float((err < RADIUS_M).float().mean() * 100)
