"""Checkpoints round-trip exactly and refuse any mismatch by name; the policy runs from pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from model.config import VaeConfig
from model.light_wam import build_model
from model.normalize import MinMax
from model.pixels import join_cameras, to_unit_range
from model.policy import LightWAMPolicy, Observation, Prompts
from model.vae import build_vae
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


def test_policy_acts_on_raw_camera_images_in_raw_units():
    """Images of any size per camera, raw state, a known prompt -> the raw chunk the model predicts for the
    cache's view of the same moment (each camera resized and joined, pixels in [-1, 1], state normalized)."""
    cfg = tiny_config()
    model = build_model(cfg).eval()
    vae = build_vae(VaeConfig(base_dim=16, dim_mult=[1, 2, 2, 2], num_res_blocks=1))
    state_norm = MinMax(torch.full((cfg.proprio_dim,), -2.0), torch.full((cfg.proprio_dim,), 2.0))
    action_norm = MinMax(torch.zeros(cfg.action_dim), torch.full((cfg.action_dim,), 10.0))
    gen = np.random.default_rng(0)
    images = {"front": gen.integers(0, 256, (48, 40, 3), dtype=np.uint8),
              "wrist": gen.integers(0, 256, (64, 64, 3), dtype=np.uint8)}
    state, text = torch.randn(cfg.proprio_dim), torch.randn(6, cfg.backbone.text_dim)
    pixels = to_unit_range(join_cameras([images["front"][None], images["wrist"][None]], 64, 64))[:, :, None]
    batch = {"current_pixels": pixels, "proprio": state_norm.normalize(state)[None], "text": text[None],
             "text_mask": torch.ones(1, 6, dtype=torch.bool)}
    want = action_norm.denormalize(model.predict_actions(batch, vae=vae)[0])
    prompts = Prompts({"open it": (text, torch.ones(6, dtype=torch.bool)), "close it": (text[:4], torch.ones(4, dtype=torch.bool))})
    policy = LightWAMPolicy(model, vae, state_norm, action_norm, prompts,
                            ["observation.images.front", "observation.images.wrist"], (64, 64))
    got = policy.act(Observation(images, state.numpy(), "open it"))
    assert got.shape == (cfg.action_horizon, cfg.action_dim) and got.dtype == np.float32
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)
    both = policy.act_batch([Observation(images, state.numpy(), "close it"), Observation(images, state.numpy(), "open it")])
    np.testing.assert_allclose(both[1], got, rtol=1e-4, atol=1e-4)  # padding of the shorter prompt is masked
    with pytest.raises(KeyError, match="not in the training data"):
        policy.act(Observation(images, state.numpy(), "dance"))
    with pytest.raises(KeyError, match="camera 'wrist'"):
        policy.act(Observation({"front": images["front"]}, state.numpy(), "open it"))
