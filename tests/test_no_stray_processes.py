"""An entry point with its own Ray cluster leaves no process behind when it returns.

`pipeline.preprocess`, `train`, `evaluate` and `run` all start their cluster
through `cluster.ray_session`; the test runs that session in a subprocess (without
the model, so it stays cheap) and checks the process tree the moment it returns.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import psutil


def _watch(root: psutil.Process, seen: dict[int, float], done: threading.Event) -> None:
    """Record every descendant (pid -> create time) while the command runs."""
    while not done.is_set():
        try:
            for proc in root.children(recursive=True):
                seen.setdefault(proc.pid, proc.create_time())
        except psutil.Error:
            pass
        done.wait(0.1)


def _still_running(seen: dict[int, float]) -> list[str]:
    alive = []
    for pid, created in seen.items():
        try:
            proc = psutil.Process(pid)
            if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{pid} {' '.join(proc.cmdline())[:80]}")
        except psutil.Error:
            continue
    return alive


# What every entry point does with Ray: an embedded session that runs work on its workers, then returns.
ENTRY = """
import ray
from cluster.ray_session import ray_session
from cluster.config import ClusterConfig
with ray_session(ClusterConfig(num_cpus=2)):
    ray.get([ray.remote(lambda i: i).remote(i) for i in range(4)])
print("done")
"""


def _run_and_watch(cmd: list[str]) -> tuple[subprocess.CompletedProcess, dict[int, float]]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[int, float] = {}
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(psutil.Process(proc.pid), seen, done), daemon=True)
    watcher.start()
    out, _ = proc.communicate(timeout=600)
    done.set()
    watcher.join()
    return subprocess.CompletedProcess(cmd, proc.returncode, out), seen


def test_an_embedded_ray_session_leaves_no_process_behind():
    """The session waits for its Ray processes (head, raylet, workers) before the command returns."""
    result, seen = _run_and_watch([sys.executable, "-c", ENTRY])
    assert result.returncode == 0 and "done" in result.stdout, result.stdout[-2000:]
    assert len(seen) >= 3, seen  # head services and workers were started
    assert _still_running(seen) == []  # checked the moment the command returned
