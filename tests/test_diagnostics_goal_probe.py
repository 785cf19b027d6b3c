"""diagnostics/goal_probe.py and its learners: the probe reads back what it was given, from real renders."""

import numpy as np
import torch

import diagnostics.goal_probe as probe
import diagnostics.position_probes as learners


def test_ridge_recovers_a_linear_map_on_new_inputs():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, 5, generator=gen)
    w = torch.randn(20, 3, generator=gen)
    y = x.flatten(1) @ w + torch.tensor([0.1, 0.7, 0.2])
    pred = learners.ridge(x[:40], y[:40], x[40:])
    assert (pred - y[40:]).abs().max() < 0.05


def test_ridge_cannot_read_noise():
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(60, 20, generator=gen), torch.randn(60, 3, generator=gen)
    err, _ = learners.score(learners.ridge(x[:40], y[:40], x[40:]), y[40:])
    chance, _ = learners.score(y[:40].mean(0).expand(20, 3), y[40:])
    assert err > 0.9 * chance


def test_layouts_hold_the_goal_metaworld_placed():
    layouts = probe.render_layouts("reach-v3", ["workspace"], 32, range(3), shadows=False)
    assert layouts.frames.shape == (3, 32, 32, 3) and layouts.frames.dtype == np.uint8
    assert len({tuple(g) for g in layouts.goal.round(4)}) == 3, "each seed draws its own goal"
    again = probe.render_layouts("reach-v3", ["workspace"], 32, range(2, 3), shadows=False)
    np.testing.assert_array_equal(again.goal[0], layouts.goal[2])
    np.testing.assert_array_equal(again.frames[0], layouts.frames[2])
    assert not np.array_equal(layouts.frames[0], layouts.frames[1]), "each layout renders differently"


def test_prior_states_read_the_saved_dit_not_a_random_one(tmp_path):
    """The probe's DiT states come from the weights at the given path (as Light-WAM loads them), a frame at a time."""
    from diagnostics import prior_states
    from pipeline.cli import load_config
    from tests.tiny import CACHE, MODEL

    cfg, _ = load_config(["preset=bench_prior", *CACHE, *MODEL])
    saved = prior_states.load_backbone(cfg, "")
    with torch.no_grad():
        for p in saved.dit.parameters():
            p.add_(0.05 * torch.randn_like(p))
    saved.dit.save_pretrained(tmp_path / "transformer")
    latents = torch.randn(3, cfg.model.backbone.in_channels, 4, 4)
    context = prior_states.text_context(cfg, "reach-v3")
    loaded = prior_states.dit_states(prior_states.load_backbone(cfg, str(tmp_path)), latents, context, batch=2)
    torch.testing.assert_close(loaded, prior_states.dit_states(saved, latents, context))
    assert list(loaded) == sorted(cfg.model.backbone.adapter_layers)  # every block the expert reads
    width = cfg.model.backbone.num_attention_heads * cfg.model.backbone.attention_head_dim
    assert all(states.shape == (3, 4, width) for states in loaded.values())
    random = prior_states.dit_states(prior_states.load_backbone(cfg, ""), latents, context)
    assert not any(torch.allclose(random[layer], loaded[layer]) for layer in loaded)
