"""The policy bundle: a directory holding everything a robot or simulator needs to act.

`model.safetensors` (trainable weights + model config), `policy.json` (cache
geometry, cameras, normalization stats, VAE config and weights hash, the cache
fingerprint), `text.safetensors` (the cached embedding of every training task).
This is what MLflow stores and registers; `load_policy` turns it back into a
`LightWAMPolicy` without needing the cache or the text encoder.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from model.checkpoint import config_from_json, load_checkpoint
from model.config import VaeConfig
from model.normalize import MinMax
from model.policy import LightWAMPolicy, Prompts
from model.vae import build_vae, vae_identity
from pipeline.config import Config
from stages.cache_loader import CacheHandle


@dataclass
class PolicyInfo:
    cameras: list[str]
    image_height: int  # per camera
    image_width: int
    action_horizon: int
    tasks: list[str]
    cache_fingerprint: str


@dataclass
class LoadedPolicy:
    policy: LightWAMPolicy
    info: PolicyInfo


def write_bundle(out: Path, model_file: Path, cfg: Config, cache: CacheHandle) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model_file, out / "model.safetensors")
    task_keys = cache.manifest["text_keys"]  # task text -> embedding key
    tasks = sorted(task_keys)
    tensors = {}
    for i, task in enumerate(tasks):
        emb, mask = cache.text[task_keys[task]]
        tensors[f"{i}.embedding"] = torch.as_tensor(np.asarray(emb, dtype=np.float32))
        tensors[f"{i}.mask"] = torch.as_tensor(np.asarray(mask, dtype=bool))
    save_file(tensors, str(out / "text.safetensors"))
    info = PolicyInfo(cameras=list(cache.manifest["identity"]["data.cameras"]), image_height=cfg.cache.image_height, image_width=cfg.cache.image_width,
                      action_horizon=cfg.model.action_horizon, tasks=tasks, cache_fingerprint=cache.fingerprint)
    meta = {"info": asdict(info), "stats": cache.stats, "vae": asdict(cfg.cache.vae),
            "vae_weights_sha256": cache.manifest["vae"]["weights_sha256"]}
    (out / "policy.json").write_text(json.dumps(meta, indent=2))
    return out


def read_info(bundle: Path) -> PolicyInfo:
    """What the policy expects (cameras, image size, tasks), without loading any weights."""
    return PolicyInfo(**json.loads((Path(bundle) / "policy.json").read_text())["info"])


def load_policy(bundle: Path, device: str = "cpu", check_vae: bool = True) -> LoadedPolicy:
    meta = json.loads((bundle / "policy.json").read_text())
    info = PolicyInfo(**meta["info"])
    vae_cfg = VaeConfig(**meta["vae"])
    vae = build_vae(vae_cfg, device=device)
    if check_vae and vae_identity(vae)["weights_sha256"] != meta["vae_weights_sha256"]:
        raise ValueError(f"{bundle}: the VAE built from {vae_cfg} is not the one the cache was encoded with")
    with safe_open(str(bundle / "model.safetensors"), framework="pt") as f:
        model_cfg = config_from_json((f.metadata() or {})["config"])
    model_cfg.device = device  # trained on any device, loaded onto this one
    model = load_checkpoint(bundle / "model.safetensors", cfg=model_cfg, inference=True)
    stats = meta["stats"]
    raw = load_file(str(bundle / "text.safetensors"))
    prompts = Prompts({task: (raw[f"{i}.embedding"], raw[f"{i}.mask"]) for i, task in enumerate(info.tasks)})
    policy = LightWAMPolicy(model, vae, MinMax.from_stats(stats["proprio"], device),
                            MinMax.from_stats(stats["actions"], device), prompts, info.cameras,
                            (info.image_height, info.image_width))
    return LoadedPolicy(policy, info)
