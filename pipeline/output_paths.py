"""Where relative output paths resolve, so results outlive a `ray job submit` job.

A submitted job runs in Ray's temporary copy of the working directory
(`<ray temp>/session_*/runtime_resources/working_dir_files/_ray_pkg_*`), which
Ray deletes with its session. A relative `workdir` (or `cache.root`,
`cluster.storage`) resolves against `$LIGHT_WAM_HOME` when it is set; without
it, against the current directory, except inside Ray's copy, where it resolves
against `~/.cache/light-wam` so that later jobs find the same cache and runs.
An output path that still lands inside Ray's runtime directory is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "LIGHT_WAM_HOME"
JOB_DEFAULT_HOME = "~/.cache/light-wam"


def in_ray_runtime_dir(path: Path) -> bool:
    """Is `path` inside the per-session files Ray makes for a job (working dir copies, runtime envs)?"""
    return "runtime_resources" in path.parts


def output_base() -> Path:
    """The directory relative output paths resolve against."""
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser()
    cwd = Path.cwd().resolve()
    return Path(JOB_DEFAULT_HOME).expanduser() if in_ray_runtime_dir(cwd) else cwd


def output_path(value: str, key: str) -> Path:
    """The absolute, stable path for the output setting `key` (e.g. `workdir`) given as `value`."""
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = output_base() / path
    path = path.resolve()
    if in_ray_runtime_dir(path):
        raise ValueError(
            f"{key}={value} resolves to {path}, inside Ray's temporary runtime directory, which Ray deletes "
            f"with its session: give {key} an absolute path outside it, or set ${HOME_ENV} (README, "
            f"'Run on a Ray cluster')")
    return path
