"""`model.shortcut` (not in the paper): keypoints of the current frame and the state, beside the expert."""

from __future__ import annotations

import pytest
import torch

from model.config import ShortcutConfig
from model.light_wam import build_model
from model.shortcut import Shortcut
from pipeline.cli import ConfigError, load_config
from tests.test_model import one_thread, tiny_batch, tiny_config  # noqa: F401  (one_thread: autouse fixture)


def test_shortcut_reads_where_a_marker_is_and_the_state():
    """The wanted output is a marker's (x, y) in the frame plus the state: the shortcut fits both."""
    gen = torch.Generator().manual_seed(0)
    rows, cols = torch.randint(1, 15, (64,), generator=gen), torch.randint(1, 31, (64,), generator=gen)
    pixels = -torch.ones(64, 3, 1, 16, 32)
    for i, (r, c) in enumerate(zip(rows, cols)):
        pixels[i, :, 0, r - 1:r + 2, c - 1:c + 2] = 1.0
    state = torch.randn(64, 2, generator=gen)
    target = torch.stack([cols / 15.5 - 1, rows / 7.5 - 1], 1) + state
    torch.manual_seed(1)
    shortcut = Shortcut(ShortcutConfig(enabled=True, keypoints=8), proprio_dim=2, hidden_dim=2)
    assert torch.equal(shortcut(state, pixels), torch.zeros(64, 2))  # zero at init
    opt = torch.optim.Adam(shortcut.parameters(), lr=2e-3)
    for _ in range(300):
        loss = (shortcut(state, pixels) - target).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.2 * target.var().item()
    with pytest.raises(ValueError, match="current_frames"):
        shortcut(state, None)


def test_a_model_with_the_shortcut_starts_as_the_paper_model_and_trains_it():
    cfg = tiny_config()
    batch = tiny_batch(cfg)
    batch["current_pixels"] = torch.rand(2, 3, 1, 64, 128) * 2 - 1
    torch.manual_seed(0)
    paper = build_model(cfg)
    cfg.shortcut.enabled = True
    torch.manual_seed(0)
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(paper.state_dict(), strict=False)
    assert not unexpected and missing and all(key.startswith("shortcut.") for key in missing)
    torch.testing.assert_close(model.predict_actions(batch), paper.predict_actions(batch))
    model(batch)["loss"].backward()
    assert model.shortcut.pixel_proj[-1].weight.grad.abs().sum() > 0
    assert model.shortcut.state_proj[-1].weight.grad.abs().sum() > 0


def test_the_shortcut_needs_cached_frames_and_the_paper_preset_refuses_it():
    with pytest.raises(ConfigError, match="cache.current_frames=true"):
        load_config(["preset=demo", "model.shortcut.enabled=true"])
    assert load_config(["preset=demo", "model.shortcut.enabled=true", "cache.current_frames=true"])[0]
    with pytest.raises(ConfigError, match="paper preset refuses model.shortcut"):
        load_config(["preset=paper", "model.shortcut.enabled=true", "cache.current_frames=true"])
    with pytest.raises(ConfigError, match="paper preset refuses train.pixel_shift"):
        load_config(["preset=paper", "model.shortcut.enabled=false", "train.pixel_shift=2"])
