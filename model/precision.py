"""Whether bf16 pays on this device: CUDA's own check, or the CPU's bf16 instructions.

On a CPU without `avx512_bf16` / `amx_bf16` (lscpu flags) PyTorch emulates bf16
matmuls through fp32 conversions, which is slower than fp32 itself; with
`avx512_bf16` the matmuls run at about twice fp32's rate, with AMX far more.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bf16_flags() -> list[str]:
    """The bf16 instruction flags this CPU reports (Linux /proc/cpuinfo; empty elsewhere)."""
    info = Path("/proc/cpuinfo")
    if not info.exists():
        return []
    flags = next((line.split(":", 1)[1].split() for line in info.read_text().splitlines() if line.startswith("flags")), [])
    return [f for f in BF16_CPU_FLAGS if f in flags]


def bf16_support(device: torch.device | str) -> tuple[bool, str]:
    """(fast bf16 on `device`, a sentence saying why)."""
    device = torch.device(device)
    if device.type == "cuda":
        ok = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return ok, "CUDA bf16 supported" if ok else "this CUDA device has no bf16 support"
    flags = cpu_bf16_flags()
    if flags:
        return True, f"CPU has {', '.join(flags)}"
    return False, ("CPU reports neither avx512_bf16 nor amx_bf16: bf16 runs emulated through fp32 here, "
                   "slower than fp32")


def warn_if_slow_bf16(device: torch.device | str, what: str) -> None:
    """A warning naming `what` when bf16 was asked for on a device without fast bf16."""
    ok, why = bf16_support(device)
    if not ok:
        warnings.warn(f"{what}: bf16 asked for, but {why}", stacklevel=2)
