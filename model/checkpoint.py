"""Light-WAM checkpoints: the trainable weights only, as safetensors, with the model config inside.

A frozen pretrained backbone is not copied into every checkpoint: loading
rebuilds the model from the embedded config (which names the backbone
directory) and overlays the trained weights. Every key and shape must match;
a mismatch is an error that names the key, never a silent partial load.
"""

from __future__ import annotations

import dataclasses
import json
import re
from enum import Enum
from pathlib import Path

import torch
from omegaconf import OmegaConf
from safetensors import safe_open
from safetensors.torch import save_file

from model.config import ModelConfig
from model.light_wam import LightWAM, build_model

FORMAT = "light-wam/1"


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model: the message names the key."""


def config_to_json(cfg: ModelConfig) -> str:
    return json.dumps(dataclasses.asdict(cfg), default=lambda v: v.value if isinstance(v, Enum) else str(v))


def config_from_json(text: str) -> ModelConfig:
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ModelConfig), json.loads(text)))


def trainable_state(model: LightWAM) -> dict[str, torch.Tensor]:
    """The weights training changes (names fixed when the model was built)."""
    params = dict(model.named_parameters())
    missing = [n for n in model.trainable_names if n not in params]
    if missing:
        raise CheckpointError(f"model no longer has trainable weight '{missing[0]}' (merged for inference?)")
    return {n: params[n].detach() for n in model.trainable_names}


def load_trainable_state(model: LightWAM, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into the model's trainable weights; refuse any missing, extra or reshaped key.

    The one allowed difference: a model built for inference has no blocks past
    the last fused one, so checkpoint keys of those blocks are skipped.
    """
    kept = len(model.backbone.dit.blocks)
    dropped = re.compile(r"backbone\.dit\.blocks\.(\d+)\.")

    def needed(name: str) -> bool:
        m = dropped.match(name)
        return m is None or int(m.group(1)) < kept

    params = dict(model.named_parameters())
    expected = [n for n in model.trainable_names if n in params]
    given = [n for n in state if needed(n)]
    for name in expected:
        if name not in state:
            raise CheckpointError(f"checkpoint is missing key '{name}'")
    for name in given:
        if name not in params or name not in expected:
            raise CheckpointError(f"checkpoint has unexpected key '{name}'")
        if tuple(state[name].shape) != tuple(params[name].shape):
            raise CheckpointError(
                f"checkpoint key '{name}' has shape {tuple(state[name].shape)}, model expects {tuple(params[name].shape)}"
            )
    with torch.no_grad():
        for name in given:
            params[name].copy_(state[name])


def save_checkpoint(model: LightWAM, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Write `path` (.safetensors): trainable weights + {"format", "config": ModelConfig JSON, **metadata}."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {n: t.to("cpu").contiguous() for n, t in trainable_state(model).items()}
    meta = {"format": FORMAT, "config": config_to_json(model.cfg), **(metadata or {})}
    save_file(tensors, str(path), metadata=meta)
    return path


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], ModelConfig, dict[str, str]]:
    """(tensors, model config, metadata) of a checkpoint file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT or "config" not in meta:
            raise CheckpointError(f"{path}: not a Light-WAM checkpoint (format {meta.get('format')!r}, want {FORMAT!r})")
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, config_from_json(meta["config"]), meta


def load_checkpoint(
    path: str | Path, cfg: ModelConfig | None = None, inference: bool = False
) -> LightWAM:
    """Rebuild the model (from `cfg`, default the embedded config) and load the trained weights.

    `inference=True` returns it merged and truncated (`LightWAM.for_inference`).
    """
    tensors, saved_cfg, _ = read_checkpoint(path)
    cfg = cfg or saved_cfg
    # When the whole backbone trains, every weight comes from the file: skip the costly random init.
    model = build_model(cfg, inference=inference, fast_init=not cfg.backbone.freeze)
    try:
        load_trainable_state(model, tensors)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return model.for_inference() if inference else model
