"""Which malloc the training workers run on, chosen by preloading it.

Why: a training step allocates and frees multi-MiB activation buffers of
ever-changing sizes. The C library's malloc keeps much of that freed memory
resident (measured on the paper step: ~2 GiB above jemalloc or tcmalloc;
tcmalloc was also the fastest of the three: benchmarks/train_throughput.py part B).
tcmalloc and jemalloc come from the OS (named by soname, so each node's dynamic
loader finds its own copy); mimalloc comes from PyPI (the `cmeel-mimalloc` wheel,
a project dependency), so a fresh machine has it after `make setup` alone: it is
preloaded by its path inside this environment. A node without the library prints
a loader warning and runs on the C library's malloc.
"""

from __future__ import annotations

import ctypes.util
import os
from importlib import metadata
from pathlib import Path

from pipeline.config import Allocator

SONAMES = {Allocator.jemalloc: "libjemalloc.so.2", Allocator.tcmalloc: "libtcmalloc_minimal.so.4"}
_LIBRARY = {Allocator.jemalloc: "jemalloc", Allocator.tcmalloc: "tcmalloc_minimal"}
_INSTALL = {Allocator.jemalloc: "apt-get install libjemalloc2", Allocator.tcmalloc: "apt-get install libtcmalloc-minimal4",
            Allocator.mimalloc: "pip install cmeel-mimalloc"}


def mimalloc_path() -> str | None:
    """The shared library of the installed cmeel-mimalloc wheel, or None."""
    try:
        files = metadata.files("cmeel-mimalloc") or []
    except metadata.PackageNotFoundError:
        return None
    libs = sorted(str(f.locate()) for f in files if f.name.startswith("libmimalloc.so"))
    return libs[0] if libs else None


def library(choice: Allocator) -> str | None:
    """What LD_PRELOAD names for `choice` (soname or path), or None when this machine does not have it."""
    if choice == Allocator.mimalloc:
        return mimalloc_path()
    return SONAMES[choice] if ctypes.util.find_library(_LIBRARY[choice]) else None


def resolve(choice: Allocator) -> Allocator:
    """`auto` -> tcmalloc, else jemalloc, else mimalloc, whichever this machine has, else system;
    an explicit choice must be installed."""
    if choice == Allocator.auto:
        found = [a for a in (Allocator.tcmalloc, Allocator.jemalloc, Allocator.mimalloc) if library(a)]
        return found[0] if found else Allocator.system
    if choice != Allocator.system and not library(choice):
        raise ValueError(f"train.allocator={choice.value}: its library is not installed on this machine "
                         f"({_INSTALL[choice]}); use train.allocator=system or auto")
    return choice


def worker_env(choice: Allocator) -> dict[str, str]:
    """Environment variables that make a new worker process use `choice`."""
    chosen = resolve(choice)
    if chosen == Allocator.system:
        return {}
    preload = " ".join(p for p in (os.environ.get("LD_PRELOAD", ""), library(chosen)) if p)
    return {"LD_PRELOAD": preload}


def active() -> str:
    """The malloc this process actually runs on: jemalloc, tcmalloc, mimalloc or system."""
    maps = Path("/proc/self/maps")
    text = maps.read_text() if maps.exists() else ""
    for name in ("jemalloc", "tcmalloc", "mimalloc"):
        if f"lib{name}" in text:
            return name
    return "system"
