"""A policy bundle for the server tests, written in seconds by the real bundle writer.

Training one would cost the suite minutes; the server must not care whether the weights are trained, so the
model is the tiny end-to-end config (tests/tiny.py) randomly initialised, the text embedding is the real
encoder's for MetaWorld's reach-v3 instruction (so closed-loop MetaWorld can drive it), and the cache handle
holds what `write_bundle` reads: the VAE's weight hash, normalisation stats in MetaWorld's units, the cameras.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tiny import CACHE, DEMO, MODEL

from model.checkpoint import save_checkpoint
from model.light_wam import build_model
from model.policy import CAMERA_PREFIX as VIDEO_PREFIX
from model.vae import build_vae, vae_identity
from pipeline.cli import load_config
from pipeline.policy_bundle import write_bundle
from sim.metaworld_env import instruction_for
from stages.cache_loader import CacheHandle
from stages.text import PromptEncoder, prompt_for

TASK = "reach-v3"
CONFIG = [*DEMO, *CACHE, *MODEL]
STATE_RANGE = {"min": [-0.5, 0.3, 0.0, 0.0], "max": [0.5, 0.95, 0.35, 1.0]}  # end effector xyz, gripper opening
ACTION_RANGE = {"min": [-1.0] * 4, "max": [1.0] * 4}


def tiny_bundle(out: Path, seed: int = 0) -> Path:
    return random_bundle(out, CONFIG, seed)


def random_bundle(out: Path, overrides: list[str], seed: int = 0) -> Path:
    """A bundle for `load_config(overrides)` (its model, cache geometry, cameras), knowing the reach-v3 instruction."""
    cfg = load_config(overrides)[0]
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    with torch.no_grad():  # LoRA B and some heads start at zero: perturb so actions depend on every input
        params = dict(model.named_parameters())
        for name in model.trainable_names:
            params[name].add_(torch.randn_like(params[name]) * 0.05)
    model_file = save_checkpoint(model, out.parent / f"{out.name}-model.safetensors")
    instruction = instruction_for(TASK)
    emb, mask = PromptEncoder(cfg.cache.text).encode([prompt_for(cfg.cache.text, instruction)])
    manifest = {
        "text_keys": {instruction: "task0"},
        "identity": {"data.cameras": [VIDEO_PREFIX + c for c in cfg.demo.cameras]},
        "fingerprint": f"serve-test-{seed}",
        "vae": {"weights_sha256": vae_identity(build_vae(cfg.cache.vae))["weights_sha256"]},
    }
    p, a = cfg.model.proprio_dim, cfg.model.action_dim
    stats = {"proprio": STATE_RANGE if p == 4 else {"min": [-1.0] * p, "max": [1.0] * p},
             "actions": ACTION_RANGE if a == 4 else {"min": [-1.0] * a, "max": [1.0] * a}}
    cache = CacheHandle(out.parent, manifest, [], stats,
                        {"task0": (emb[0], mask[0])})
    return write_bundle(out, model_file, cfg, cache)
