"""Frozen linear weights kept in a narrower dtype, computed in the activations' dtype.

The frozen DiT holds most of a training step's memory that never changes: the paper
backbone's 1.4B frozen linear weights are 5.2 GB in fp32. Wan2.1 was trained and is
run in bf16, so storing those weights in bf16 (`model.backbone.frozen_dtype`) halves
them while every matmul still runs in fp32: each weight is widened for its matmul
and the wide copy is dropped right after, in backward too (the custom function
saves the narrow weight, not the copy autograd would keep). Trainable parameters,
LoRA included, stay in the model's dtype. Only the transformer blocks are narrowed:
diffusers' condition embedder casts its input to its own weights' dtype, which would
move the timestep embedding itself to bf16.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class _WidenedLinear(torch.autograd.Function):
    """y = x W^T + b with W stored narrow and frozen: backward needs only W, and only for dx."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(weight)
        return F.linear(x, weight.to(x.dtype), None if bias is None else bias.to(x.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (weight,) = ctx.saved_tensors
        return grad @ weight.to(grad.dtype), None, None


class NarrowFrozenLinear(nn.Linear):
    """An `nn.Linear` whose frozen weight is stored narrow (peft wraps it as any Linear)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight.dtype == x.dtype:
            return super().forward(x)
        return _WidenedLinear.apply(x, self.weight, self.bias)


def narrow_frozen_linears(module: nn.Module, dtype: torch.dtype) -> None:
    """Store every frozen `nn.Linear` weight (and bias) of `module` in `dtype`."""
    for sub in module.modules():  # a NarrowFrozenLinear widened by `.to()` is narrowed again
        if type(sub) in (nn.Linear, NarrowFrozenLinear) and not sub.weight.requires_grad and sub.weight.dtype != dtype:
            if sub.bias is not None and sub.bias.requires_grad:
                continue
            sub.__class__ = NarrowFrozenLinear  # same state, a forward that widens the weight per call
            _store(sub, dtype)


def widen_frozen_linears(module: nn.Module, dtype: torch.dtype) -> None:
    """Store every narrowed frozen weight of `module` in `dtype` again (merging LoRA into a bf16 weight would
    round the sum: the merged model would no longer compute what was trained)."""
    for sub in module.modules():
        if isinstance(sub, NarrowFrozenLinear) and sub.weight.dtype != dtype:
            _store(sub, dtype)


def _store(linear: nn.Linear, dtype: torch.dtype) -> None:
    linear.weight.data = linear.weight.data.to(dtype)
    if linear.bias is not None:
        linear.bias.data = linear.bias.data.to(dtype)
