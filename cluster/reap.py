"""Make sure an embedded Ray cluster's processes are gone when its session ends.

`ray.shutdown()` stops the head (GCS, raylet), but a worker notices only later,
so a command could return while a Ray worker it started was still running. The
session notes its Ray descendants before shutting down and waits for them here,
killing what is still alive after a grace period.
"""

from __future__ import annotations

import psutil

GRACE_S = 5.0


def ray_descendants() -> list[psutil.Process]:
    """Processes under this one that belong to Ray (head services, workers, agents)."""
    out = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "ray" in " ".join(proc.cmdline()) or proc.name() in ("raylet", "gcs_server"):
                out.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def reap(procs: list[psutil.Process], grace_s: float = GRACE_S) -> list[int]:
    """Wait for `procs` to exit; kill those still alive after `grace_s`. Returns the killed pids."""
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(alive, timeout=grace_s)
    return [p.pid for p in alive]
