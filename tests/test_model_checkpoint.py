"""Checkpoints round-trip exactly and refuse any mismatch by name; the policy runs from pixels."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.light_wam import build_model
from model.policy import LightWAMPolicy, MinMax
from model.vae import build_vae, encode
from pipeline.config import VaeConfig
from tests.test_model import one_thread, randomize_lora, tiny_batch, tiny_config  # noqa: F401


def _rewrite(src, dst, edit) -> None:
    with safe_open(str(src), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    edit(tensors)
    save_file(tensors, str(dst), metadata=meta)


@pytest.mark.parametrize("freeze", [True, False])
def test_round_trip_gives_identical_actions(tmp_path, freeze):
    cfg = tiny_config(freeze=freeze)
    model = build_model(cfg).eval()
    randomize_lora(model)
    with torch.no_grad():
        model.backbone.adapters["2"].up.weight.normal_()
    batch = tiny_batch(cfg)
    want = model.predict_actions(batch)
    path = save_checkpoint(model, tmp_path / "ckpt.safetensors", metadata={"step": "7"})
    loaded = load_checkpoint(path)
    torch.testing.assert_close(loaded.predict_actions(batch), want, rtol=0, atol=0)
    fast = load_checkpoint(path, inference=True)  # merged, truncated
    assert fast.inference_only and len(fast.backbone.dit.blocks) == 3
    torch.testing.assert_close(fast.predict_actions(batch), want, rtol=1e-4, atol=1e-5)
    with safe_open(str(path), framework="pt") as f:
        keys = list(f.keys())
    assert all(("lora_" in k or "adapters" in k or "expert" in k or "proprio" in k or "proj_out" in k
                or "scale_shift_table" in k) for k in keys) == freeze


def test_mismatched_checkpoints_are_refused_by_name(tmp_path):
    cfg = tiny_config()
    path = save_checkpoint(build_model(cfg), tmp_path / "ok.safetensors")
    key = "expert.head.3.weight"

    _rewrite(path, tmp_path / "missing.safetensors", lambda t: t.pop(key))
    with pytest.raises(CheckpointError, match=f"missing key '{key}'"):
        load_checkpoint(tmp_path / "missing.safetensors")

    _rewrite(path, tmp_path / "reshaped.safetensors", lambda t: t.__setitem__(key, torch.zeros(2, 2)))
    with pytest.raises(CheckpointError, match=f"'{key}' has shape"):
        load_checkpoint(tmp_path / "reshaped.safetensors")

    _rewrite(path, tmp_path / "extra.safetensors", lambda t: t.__setitem__("expert.bogus", torch.zeros(1)))
    with pytest.raises(CheckpointError, match="unexpected key 'expert.bogus'"):
        load_checkpoint(tmp_path / "extra.safetensors")


def test_policy_acts_from_pixels_in_raw_units():
    cfg = tiny_config()
    model = build_model(cfg).eval()
    vae = build_vae(VaeConfig(base_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1))
    state_norm = MinMax(torch.full((cfg.proprio_dim,), -2.0), torch.full((cfg.proprio_dim,), 2.0))
    action_norm = MinMax(torch.zeros(cfg.action_dim), torch.full((cfg.action_dim,), 10.0))
    pixels = torch.rand(3, 64, 128) * 2 - 1
    state, text = torch.randn(cfg.proprio_dim), torch.randn(6, cfg.backbone.text_dim)
    batch = {"current_pixels": pixels[None, :, None], "proprio": state_norm.normalize(state)[None], "text": text[None]}
    want = action_norm.denormalize(model.predict_actions(batch, vae=vae)[0])
    policy = LightWAMPolicy(model, vae, state_norm, action_norm)
    got = policy.act(pixels, state, text)
    assert got.shape == (cfg.action_horizon, cfg.action_dim)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(action_norm.normalize(action_norm.denormalize(got)), got, rtol=1e-5, atol=1e-5)


def test_policy_encodes_the_small_frame_and_reads_the_larger_one_with_its_pixel_path():
    """cache.current_frame_scale > 1: the VAE sees the frame at the cache's size, the keypoints at 2x."""
    torch.manual_seed(0)
    cfg = tiny_config()
    cfg.expert.pixel_input = True
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.expert.pixel_proj[-1].weight.normal_(std=10.0)  # zero at init: make the pixel path count
    vae = build_vae(VaeConfig(base_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1))
    norm = MinMax(torch.full((cfg.proprio_dim,), -1.0), torch.full((cfg.proprio_dim,), 1.0))
    small, large = -torch.ones(3, 64, 128), -torch.ones(3, 128, 256)
    small[:, 40:56, 90:120] = 1.0  # one bright patch, placed elsewhere in each frame
    large[:, 8:40, 8:60] = 1.0
    state, text = torch.rand(cfg.proprio_dim) * 2 - 1, torch.randn(6, cfg.backbone.text_dim)
    policy = LightWAMPolicy(model, vae, norm, MinMax(torch.full((cfg.action_dim,), -1.0), torch.ones(cfg.action_dim)))
    got = policy.act(small, state, text, current=large)
    want = policy.model.predict_actions({"current_latent": encode(vae, small[None, :, None]),
                                         "current_pixels": large[None, :, None], "proprio": state[None],
                                         "text": text[None]})[0]
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert (got - policy.act(small, state, text)).abs().max() > 1e-3  # the larger frame was read
