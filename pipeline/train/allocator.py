"""Which malloc the training workers run on, chosen by preloading it.

Why: a training step allocates and frees multi-MiB activation buffers of
ever-changing sizes. The C library's malloc keeps much of that freed memory
resident (measured on the paper step: ~2 GiB above jemalloc or tcmalloc;
tcmalloc was also the fastest of the three: benchmarks/train_throughput.py part B). The library is named by
soname, not path, so each node's dynamic loader finds its own copy; a node
without it prints a loader warning and runs on the C library's malloc.
"""

from __future__ import annotations

import ctypes.util
import os
from pathlib import Path

from pipeline.config import Allocator

SONAMES = {Allocator.jemalloc: "libjemalloc.so.2", Allocator.tcmalloc: "libtcmalloc_minimal.so.4"}
_LIBRARY = {Allocator.jemalloc: "jemalloc", Allocator.tcmalloc: "tcmalloc_minimal"}
_INSTALL = {Allocator.jemalloc: "libjemalloc2", Allocator.tcmalloc: "libtcmalloc-minimal4"}


def resolve(choice: Allocator) -> Allocator:
    """`auto` -> tcmalloc, else jemalloc, whichever this machine has, else system; an explicit choice must be installed."""
    if choice == Allocator.auto:
        found = [a for a in (Allocator.tcmalloc, Allocator.jemalloc) if ctypes.util.find_library(_LIBRARY[a])]
        return found[0] if found else Allocator.system
    if choice != Allocator.system and not ctypes.util.find_library(_LIBRARY[choice]):
        raise ValueError(f"train.allocator={choice.value}: {SONAMES[choice]} is not installed on this machine "
                         f"(Debian/Ubuntu: apt-get install {_INSTALL[choice]}); use train.allocator=system or auto")
    return choice


def worker_env(choice: Allocator) -> dict[str, str]:
    """Environment variables that make a new worker process use `choice`."""
    chosen = resolve(choice)
    if chosen == Allocator.system:
        return {}
    preload = " ".join(p for p in (os.environ.get("LD_PRELOAD", ""), SONAMES[chosen]) if p)
    return {"LD_PRELOAD": preload}


def active() -> str:
    """The malloc this process actually runs on: jemalloc, tcmalloc or system."""
    maps = Path("/proc/self/maps")
    text = maps.read_text() if maps.exists() else ""
    for name in ("jemalloc", "tcmalloc"):
        if f"lib{name}" in text:
            return name
    return "system"
