"""The expert's direct look at the current frame (`pixel_input`, `pixel_film`) on the tiny model config."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from model.light_wam import build_model
from pipeline.cli import ConfigError, load_config
from tests.test_model import one_thread, tiny_batch, tiny_config  # noqa: F401  (one_thread: autouse fixture)


def test_pixel_input_lets_the_expert_fit_an_action_given_by_where_a_marker_is():
    """The wanted action is a marker's (x, y) in the frame; the backbone tokens are the same for every frame.
    The pixel keypoints fit it; without them the expert has nothing that varies."""
    from model.expert import StateFusionActionExpert

    cfg = dataclasses.replace(tiny_config().expert, pixel_keypoints=8)
    gen = torch.Generator().manual_seed(0)
    rows, cols = torch.randint(1, 15, (64,), generator=gen), torch.randint(1, 31, (64,), generator=gen)
    pixels = -torch.ones(64, 3, 1, 16, 32)
    for i, (r, c) in enumerate(zip(rows, cols)):
        pixels[i, :, 0, r - 1:r + 2, c - 1:c + 2] = 1.0
    target = torch.stack([cols / 15.5 - 1, rows / 7.5 - 1], 1)[:, None, :].expand(-1, 4, -1)
    tokens = torch.randn(1, 8, 32, generator=gen).expand(64, -1, -1)

    def final_error(with_pixels: bool) -> float:
        torch.manual_seed(1)
        expert = StateFusionActionExpert(dataclasses.replace(cfg, pixel_input=with_pixels), 32, 1, 4, 2)
        opt = torch.optim.Adam(expert.parameters(), lr=2e-3)
        for _ in range(300):
            loss = (expert([tokens], None, None, pixels) - target).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return loss.item()

    blind, seeing = final_error(False), final_error(True)
    assert blind > 0.2  # the marker positions' variance
    assert seeing < 0.2 * blind
    with pytest.raises(ValueError, match="current_frames"):
        StateFusionActionExpert(dataclasses.replace(cfg, pixel_input=True), 32, 1, 4, 2)([tokens], None)


def test_pixel_input_model_starts_as_the_model_without_it_and_needs_the_cache_frames():
    cfg = tiny_config()
    batch = tiny_batch(cfg)
    batch["current_pixels"] = torch.rand(2, 3, 1, 64, 128) * 2 - 1
    torch.manual_seed(0)
    without = build_model(cfg)
    cfg.expert.pixel_input = True
    torch.manual_seed(0)
    model = build_model(cfg)
    torch.testing.assert_close(model.predict_actions(batch), without.predict_actions(batch))
    model(batch)["loss"].backward()
    assert model.expert.pixel_proj[-1].weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="cache.current_frames=true"):
        load_config(["preset=demo", "model.expert.pixel_input=true"])
    assert load_config(["preset=demo", "model.expert.pixel_input=true", "cache.current_frames=true"])[0]


def test_pixel_film_lets_the_instruction_choose_which_marker_the_expert_follows():
    """Two markers in every frame; the instruction says whose (x, y) is the action. The backbone tokens are the
    same for every sample, so only the pixel path can answer, and only when its keypoints depend on the task."""
    from model.expert import StateFusionActionExpert

    cfg = dataclasses.replace(tiny_config().expert, pixel_keypoints=8, pixel_input=True)
    gen = torch.Generator().manual_seed(0)
    words = torch.randn(2, 32, generator=gen)  # the two instructions' mean text embeddings
    tokens = torch.randn(1, 8, 32, generator=gen)

    def scenes(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        places = torch.randint(1, 15, (n, 2, 2), generator=gen)  # [sample, marker, (row, col)], 16x16 frames
        pixels = -torch.ones(n, 3, 1, 16, 16)
        for i in range(n):
            for marker in range(2):
                r, c = places[i, marker].tolist()
                pixels[i, marker, 0, r - 1:r + 2, c - 1:c + 2] = 1.0  # red marker 0, green marker 1
        task = torch.arange(n) % 2
        chosen = places[torch.arange(n), task].float()
        return pixels, words[task], torch.stack([chosen[:, 1], chosen[:, 0]], 1)[:, None, :] / 7.5 - 1

    train, test = scenes(1024), scenes(256)

    def test_error(film: bool) -> float:
        torch.manual_seed(1)
        expert = StateFusionActionExpert(dataclasses.replace(cfg, pixel_film=film), 32, 1, 4, 2, text_dim=32)
        opt = torch.optim.Adam(expert.parameters(), lr=2e-3)
        for step in range(400):
            idx = torch.arange(step * 32, step * 32 + 32) % len(train[0])
            pred = expert([tokens.expand(32, -1, -1)], None, None, train[0][idx], train[1][idx])
            loss = (pred - train[2][idx]).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            pred = expert([tokens.expand(len(test[0]), -1, -1)], None, None, test[0], test[1])
        return (pred - test[2]).pow(2).mean().item()

    plain, film = test_error(False), test_error(True)
    assert film < 0.3 * plain, (film, plain)
    with pytest.raises(ValueError, match="needs pixel_input"):
        StateFusionActionExpert(dataclasses.replace(cfg, pixel_input=False, pixel_film=True), 32, 1, 4, 2, text_dim=32)
    with pytest.raises(ConfigError, match="model.expert.pixel_input=true"):
        load_config(["preset=demo", "model.expert.pixel_film=true"])


def test_pixel_film_model_starts_as_the_model_without_it_and_trains():
    cfg = tiny_config()
    cfg.expert.pixel_input = True
    batch = tiny_batch(cfg)
    batch["current_pixels"] = torch.rand(2, 3, 1, 64, 128) * 2 - 1
    torch.manual_seed(0)
    without = build_model(cfg)
    cfg.expert.pixel_film = True
    torch.manual_seed(0)
    model = build_model(cfg)
    missing, unexpected = model.load_state_dict(without.state_dict(), strict=False)
    assert not unexpected and missing and all(".film." in key for key in missing)
    torch.testing.assert_close(model.predict_actions(batch), without.predict_actions(batch))
    with torch.no_grad():
        model.expert.pixel_proj[-1].weight.normal_()  # let the keypoints reach the loss
    model(batch)["loss"].backward()
    assert model.expert.pixel_encoder.film[0].weight.grad.abs().sum() > 0
