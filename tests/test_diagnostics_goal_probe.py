"""diagnostics/goal_probe.py: the probe reads back what it was given, from real renders with the true positions."""

import numpy as np
import torch

import diagnostics.goal_probe as probe


def test_ridge_recovers_a_linear_map_on_new_inputs():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, 5, generator=gen)
    w = torch.randn(20, 3, generator=gen)
    y = x.flatten(1) @ w + torch.tensor([0.1, 0.7, 0.2])
    pred = probe.ridge(x[:40], y[:40], x[40:])
    assert (pred - y[40:]).abs().max() < 0.05


def test_ridge_cannot_read_noise():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 20, generator=gen), torch.randn(60, 3, generator=gen)
    err, _ = probe.score(probe.ridge(x[:40], y[:40], x[40:]), y[40:])
    chance, _ = probe.score(y[:40].mean(0).expand(20, 3), y[40:])
    assert err > 0.9 * chance


def test_layouts_hold_the_goal_metaworld_placed():
    layouts = probe.render_layouts("reach-v3", ["workspace"], 32, range(3), shadows=False)
    assert layouts.frames.shape == (3, 32, 32, 3) and layouts.frames.dtype == np.uint8
    assert len({tuple(g) for g in layouts.goal.round(4)}) == 3, "each seed draws its own goal"
    again = probe.render_layouts("reach-v3", ["workspace"], 32, range(2, 3), shadows=False)
    np.testing.assert_array_equal(again.goal[0], layouts.goal[2])
    np.testing.assert_array_equal(again.frames[0], layouts.frames[2])
    assert not np.array_equal(layouts.frames[0], layouts.frames[1]), "each layout renders differently"
