"""`python -m pipeline.preprocess` with its own Ray cluster leaves no process behind when it returns."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import psutil

from lerobot_fixtures import write_v3_dataset
from test_cache import overrides


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


def test_preprocess_leaves_no_process_behind(tmp_path):
    write_v3_dataset(tmp_path / "ds", lengths=(5,), cameras=("observation.images.front",))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"} | {"PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.preprocess", "cluster.num_cpus=2",
                             *overrides(tmp_path / "ds", tmp_path / "cache")],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen: dict[int, float] = {}
    done = threading.Event()
    watcher = threading.Thread(target=_watch, args=(psutil.Process(proc.pid), seen, done), daemon=True)
    watcher.start()
    out, _ = proc.communicate(timeout=600)
    done.set()
    watcher.join()
    assert proc.returncode == 0, out[-2000:]
    assert len(seen) >= 2, seen  # the command did start Ray processes
    assert _still_running(seen) == []  # checked the moment the command returned
