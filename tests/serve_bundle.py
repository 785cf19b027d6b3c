"""A policy bundle for the server tests, written in seconds by the real bundle writer.

Training one would cost the suite minutes; the server must not care whether the weights are trained, so the
model is the tiny end-to-end config (tests/tiny.py) randomly initialised, the text embedding is the real
encoder's for MetaWorld's reach-v3 instruction (so closed-loop MetaWorld can drive it), and the cache handle
holds what `write_bundle` reads: the VAE's weight hash, normalisation stats in MetaWorld's units, the cameras.
"""

from __future__ import annotations

from pathlib import Path

import torch

from model.checkpoint import save_checkpoint
from model.light_wam import build_model
from model.vae import build_vae, vae_identity
from pipeline.cli import load_config
from pipeline.policy_bundle import write_bundle
from sim.metaworld_env import instruction_for
from sim.observation import VIDEO_PREFIX
from stages.cache_loader import CacheHandle
from stages.text import PromptEncoder, prompt_for
from tiny import CACHE, DEMO, MODEL

TASK = "reach-v3"
CONFIG = [*DEMO, *CACHE, *MODEL]
STATE_RANGE = {"min": [-0.5, 0.3, 0.0, 0.0], "max": [0.5, 0.95, 0.35, 1.0]}  # end effector xyz, gripper opening
ACTION_RANGE = {"min": [-1.0] * 4, "max": [1.0] * 4}


def tiny_bundle(out: Path, seed: int = 0) -> Path:
    cfg = load_config(CONFIG)[0]
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    with torch.no_grad():  # LoRA B and some heads start at zero: perturb so actions depend on every input
        for name in model.trainable_names:
            param = dict(model.named_parameters())[name]
            param.add_(torch.randn_like(param) * 0.05)
    model_file = save_checkpoint(model, out.parent / f"{out.name}-model.safetensors")
    instruction = instruction_for(TASK)
    emb, mask = PromptEncoder(cfg.cache.text).encode([prompt_for(cfg.cache.text, instruction)])
    manifest = {
        "text_keys": {instruction: "task0"},
        "identity": {"data.cameras": [VIDEO_PREFIX + c for c in cfg.demo.cameras], "cache.current_frame_scale": 1},
        "fingerprint": f"serve-test-{seed}",
        "vae": {"weights_sha256": vae_identity(build_vae(cfg.cache.vae))["weights_sha256"]},
    }
    cache = CacheHandle(out.parent, manifest, [], {"proprio": STATE_RANGE, "actions": ACTION_RANGE},
                        {"task0": (emb[0], mask[0])})
    return write_bundle(out, model_file, cfg, cache)
