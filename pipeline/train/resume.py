"""Continuing a Ray Train run from the newest complete checkpoint on disk.

Ray Train records a run's checkpoints in `checkpoint_manager_snapshot.json`,
which it rewrites in place after a checkpoint directory is complete. A run
stopped in between (Ctrl-C, `ray job stop`, a scheduler's SIGTERM, a power cut)
leaves a complete checkpoint Ray has not recorded, or an empty record Ray refuses
to start from. The checkpoint directories are complete before they are
recorded, so an unreadable record is moved aside and the newest complete
checkpoint goes to the workers when it is newer than what Ray restores.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from pipeline.console import console

SNAPSHOT = "checkpoint_manager_snapshot.json"
CHECKPOINT_FILES = ("model.safetensors", "optimizer.safetensors", "train_state.json")


def restored_checkpoint(config: dict):
    """The checkpoint a worker starts from: Ray Train's own or the driver's `resume_dir`, whichever is newer.

    Ray's is newer after a worker failure inside this run; the driver's when the
    last run stopped before Ray recorded its newest checkpoint.
    """
    import ray.train

    restored = ray.train.get_checkpoint()
    if not config.get("resume_dir"):
        return restored
    on_disk = ray.train.Checkpoint.from_directory(config["resume_dir"])
    if restored is None:
        return on_disk
    with restored.as_directory() as d:
        ray_step = checkpoint_step(Path(d)) or 0
    return on_disk if (checkpoint_step(Path(config["resume_dir"])) or 0) > ray_step else restored


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


def _recorded_step(path: Path) -> int:
    """The step of the newest checkpoint Ray's record names (0 when it names none)."""
    latest = json.loads(path.read_text()).get("latest_checkpoint_result") or {}
    return int((latest.get("metrics") or {}).get("step", 0))


def checkpoint_to_resume(run_dir: Path) -> Path | None:
    """The complete checkpoint to resume from when Ray's record would miss it, else None.

    An unreadable record is moved aside first. None when Ray's record already
    names the newest complete checkpoint, or when no complete checkpoint exists.
    """
    path = Path(run_dir) / SNAPSHOT
    newest = newest_complete_checkpoint(run_dir)
    if path.exists() and _snapshot_readable(path):
        if newest is None or checkpoint_step(newest) <= _recorded_step(path):
            return None
        console.print(f"[yellow]train: {newest.name} (step {checkpoint_step(newest)}) was written but not yet "
                      f"recorded by Ray when the last run stopped; continuing from it")
        return newest
    if not path.exists():
        if newest is not None:
            console.print(f"[yellow]train: the last run stopped before Ray recorded any checkpoint; "
                          f"continuing from {newest.name} (step {checkpoint_step(newest)})")
        return newest
    aside = path.with_name(f"{SNAPSHOT}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
    path.rename(aside)
    where = f"continuing from {newest.name} (step {checkpoint_step(newest)})" if newest else \
        "no complete checkpoint found: training starts over"
    console.print(f"[yellow]train: Ray's checkpoint record {path} was unreadable (the last run was stopped while "
                  f"writing it); moved to {aside.name}, {where}")
    return newest
