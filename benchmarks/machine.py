"""What every benchmark prints about the machine it ran on, and the process's peak memory."""

from __future__ import annotations

import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def describe(threads: int | None = None) -> str:
    """CPU, cores, torch, threads (when given) and the load average: other work shows up in the numbers."""
    try:
        torch_version = version("torch")
    except PackageNotFoundError:
        torch_version = "not installed"
    parts = [cpu_name(), f"{os.cpu_count()} cores", f"torch {torch_version}"]
    if threads is not None:
        parts.append(f"{threads} threads")
    parts += [f"load avg {os.getloadavg()[0]:.1f}", f"Python {platform.python_version()}"]
    return ", ".join(parts)


def peak_gib() -> float:
    """The process's resident-memory high-water mark (Linux VmHWM), in GiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")
