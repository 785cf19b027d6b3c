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


def _recorded_step(path: Path) -> int | None:
    """The step of the newest checkpoint Ray's record names (0 when it names none), None when unreadable."""
    try:
        latest = json.loads(path.read_text()).get("latest_checkpoint_result") or {}
    except (ValueError, UnicodeDecodeError):
        return None
    return int((latest.get("metrics") or {}).get("step", 0))


def checkpoint_to_resume(run_dir: Path) -> Path | None:
    """The complete checkpoint to resume from when Ray's record would miss it, else None.

    An unreadable record is moved aside first. None when Ray's record already
    names the newest complete checkpoint, or when no complete checkpoint exists.
    """
    path = Path(run_dir) / SNAPSHOT
    newest = newest_complete_checkpoint(run_dir)
    if newest is None and not path.exists():
        return None  # a fresh run
    step = checkpoint_step(newest) if newest else 0
    recorded = _recorded_step(path) if path.exists() else None
    if recorded is not None:
        if step <= recorded:
            return None  # Ray restores it itself
        why = f"{newest.name} was written but not yet recorded by Ray when the last run stopped"
    elif path.exists():
        aside = path.with_name(f"{SNAPSHOT}.unreadable-{time.strftime('%Y%m%d-%H%M%S')}")
        path.rename(aside)
        why = f"Ray's checkpoint record was unreadable (stopped while writing it), moved to {aside.name}"
    else:
        why = "the last run stopped before Ray recorded any checkpoint"
    where = f"continuing from {newest.name} (step {step})" if newest else "no complete checkpoint: training starts over"
    console.print(f"[yellow]train: {why}; {where}")
    return newest
