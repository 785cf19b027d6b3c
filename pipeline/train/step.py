"""The forward/backward passes of one optimizer step: shared by the Ray Train workers and the step benchmark.

Why the branches run as separate passes: the video and the action branch each
keep a full backbone's activations for backward. Running "video forward +
backward", then "action forward + backward" frees the first set before the
second is built, so the peak holds one branch's activations instead of both,
at no extra compute (the shared context projection is recomputed: a few
microseconds). Gradients add up to those of the summed loss.

DDP: every pass but the last of the step runs under `no_sync()`, so gradients
are all-reduced once per step. Each pass leaves some parameters unused (the
video pass never reaches the action expert, the action pass stops after the
last fused block), hence the model must be wrapped with
`find_unused_parameters=True` (see `DDP_KWARGS`).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from model.config import ModelConfig
from model.precision import warn_if_slow_bf16
from pipeline.config import Precision

# How the workers wrap the model: passes that skip parameters, and no second copy of the gradients.
DDP_KWARGS = {"find_unused_parameters": True, "gradient_as_bucket_view": True}


def autocast(device: torch.device, precision: Precision = Precision.auto):
    """bf16 autocast for `bf16`, and for `auto` on a CUDA device with bf16; else plain fp32."""
    if precision == Precision.bf16:
        warn_if_slow_bf16(device, "train.precision=bf16")
        return torch.autocast(device.type, dtype=torch.bfloat16)
    if precision == Precision.auto and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def branch_passes(cfg: ModelConfig, separate: bool) -> list[str]:
    """The passes one micro-batch needs; a branch whose loss weight is 0 is not run at all."""
    branches = [b for b, w in (("video", cfg.video_loss_weight), ("action", cfg.action_loss_weight)) if w != 0]
    if not branches:
        raise ValueError("model.video_loss_weight and model.action_loss_weight are both 0: nothing to train")
    if separate or len(branches) == 1:
        return branches
    return ["both"]


def accumulate_gradients(model: nn.Module, micro_batches: list[dict[str, torch.Tensor]], cfg: ModelConfig,
                         separate_branches: bool, device: torch.device,
                         precision: Precision = Precision.auto) -> dict[str, float]:
    """Forward and backward every pass of every micro-batch; returns the step's mean losses.

    `model` is the DDP-wrapped model (or the bare one); `.grad` holds the mean
    gradient over the micro-batches afterwards, ready for clipping and the optimizer.
    """
    passes = [(batch, branch) for batch in micro_batches for branch in branch_passes(cfg, separate_branches)]
    scale = 1.0 / len(micro_batches)
    totals: dict[str, float] = {}
    for i, (batch, branch) in enumerate(passes):
        last = i == len(passes) - 1
        sync = model.no_sync() if (not last and hasattr(model, "no_sync")) else contextlib.nullcontext()
        with sync, autocast(device, precision):
            out = model(batch, branch=branch)
            (out["loss"] * scale).backward()
        for key in ("video_loss", "action_loss"):
            if key in out:
                totals[key] = totals.get(key, 0.0) + float(out[key]) * scale
    totals["loss"] = (cfg.video_loss_weight * totals.get("video_loss", 0.0)
                      + cfg.action_loss_weight * totals.get("action_loss", 0.0))
    return totals
