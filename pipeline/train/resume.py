"""Continuing a Ray Train run whose checkpoint snapshot was cut short.

Ray Train records a run's checkpoints in `checkpoint_manager_snapshot.json`,
which it rewrites in place. A run stopped while that file is being written
(Ctrl-C, `ray job stop`, a scheduler's SIGTERM, a power cut) leaves it empty,
and Ray then refuses to start the run again. The checkpoint directories
themselves are complete before they are recorded, so the unreadable snapshot is
moved aside and the newest complete checkpoint goes to the workers directly.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.console import console

SNAPSHOT = "checkpoint_manager_snapshot.json"
CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "train_state.json")


def restored_checkpoint(config: dict):
    """The checkpoint a worker starts from: Ray Train's own, else the driver's recovered `resume_dir`."""
    import ray.train

    restored = ray.train.get_checkpoint()
    if restored is None and config.get("resume_dir"):
        restored = ray.train.Checkpoint.from_directory(config["resume_dir"])
    return restored


def checkpoint_step(directory: Path) -> int | None:
    """The step a checkpoint directory holds, or None when any of its files is missing or unreadable."""
    if not all((directory / name).is_file() and (directory / name).stat().st_size > 0 for name in CHECKPOINT_FILES):
        return None
    try:
        return int(json.loads((directory / "train_state.json").read_text())["step"])
    except (ValueError, KeyError, TypeError):
        return None


def newest_complete_checkpoint(run_dir: Path) -> Path | None:
    steps = {d: checkpoint_step(d) for d in Path(run_dir).glob("checkpoint_*") if d.is_dir()}
    complete = {d: s for d, s in steps.items() if s is not None}
    return max(complete, key=lambda d: complete[d]) if complete else None


def _snapshot_readable(path: Path) -> bool:
    try:
        json.loads(path.read_text())
        return True
    except (ValueError, UnicodeDecodeError):
        return False


def recover_unreadable_snapshot(run_dir: Path) -> Path | None:
    """If `run_dir` has an unreadable snapshot: move it aside and return the checkpoint to resume from.

    Returns None when there is nothing to recover (no snapshot, or a readable one:
    Ray resumes from it itself) or no complete checkpoint survived (the run starts over).
    """
    path = Path(run_dir) / SNAPSHOT
    if not path.exists() or _snapshot_readable(path):
        return None
    aside = path.with_name(f"{SNAPSHOT}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(aside)
    checkpoint = newest_complete_checkpoint(run_dir)
    where = f"continuing from {checkpoint.name} (step {checkpoint_step(checkpoint)})" if checkpoint else \
        "no complete checkpoint found: training starts over"
    console.print(f"[yellow]train: Ray's checkpoint record {path} was unreadable (the last run was stopped while "
                  f"writing it); moved to {aside.name}, {where}")
    return checkpoint
