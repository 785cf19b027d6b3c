"""The embedded demo dataset: MetaWorld scripted experts recorded as a LeRobot v3.0 dataset.

`python -m sim.demos --out DIR [demo.tasks=[reach-v3] demo.episodes_per_task=2 ...]`
generates into DIR. `ensure_demo_dataset(demo, out)` is what the pipeline calls:
it generates once per demo config and returns at once when a complete dataset
with that config exists.
Generation writes to a temporary directory and renames it when complete, so an
interrupted run never leaves a dataset that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import OmegaConf
from rich import get_console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sim.config import DemoConfig
from sim.demo_recorder import Episode, EpisodeRecorder, episode_seed, record_episode, worker_count
from sim.lerobot_writer import LeRobotV3Writer

__all__ = ["Episode", "episode_seed", "record_episode", "generate", "ensure_demo_dataset", "DemoError", "MARKER"]

MARKER = "demo_config.json"  # written last; its hash says which demo config the dataset holds
FORMAT_VERSION = 1  # bump when the generator's output changes for the same config
ATTEMPTS_PER_EPISODE = 4  # an expert may fail on a layout; give up after this many tries per episode


class DemoError(RuntimeError):
    """Generation cannot produce the requested dataset (the message says which task and why)."""


@dataclass
class DemoSummary:
    path: Path
    episodes: int
    frames: int
    attempts: int
    seconds: float


def demo_config_hash(demo: DemoConfig) -> str:
    payload = json.dumps({"format": FORMAT_VERSION, "demo": _demo_dict(demo)}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _demo_dict(demo: DemoConfig) -> dict:
    """The fields that shape the dataset (`workers` only changes how fast it is made).

    `action_noise` joins only when set, so datasets made before it existed keep their hash.
    """
    fields = {k: (v.value if hasattr(v, "value") else v) for k, v in asdict(demo).items() if k != "workers"}
    if not fields["action_noise"]:
        del fields["action_noise"]
    return fields


def generate(demo: DemoConfig, out: Path, show_progress: bool = True, progress_cls: type = Progress,
             recorder=EpisodeRecorder) -> DemoSummary:
    """Generate the dataset described by `demo` into `out` (replaced if it holds an older demo dataset).

    `progress_cls`: a rich `Progress` (sub)class, e.g. one that also prints plain lines outside a terminal;
    `recorder(demo, workers)` makes the episode source (`pipeline.prior.corpus` passes one that keeps finished episodes)."""
    out = Path(out).expanduser().resolve()
    if out.exists() and any(out.iterdir()) and not (out / MARKER).exists():
        raise DemoError(f"refusing to overwrite {out}: it exists and is not a demo dataset")
    from sim.metaworld_env import ACTION_NAMES, STATE_NAMES

    _validate(demo)

    start = time.perf_counter()
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        writer = LeRobotV3Writer(tmp, demo.fps, demo.cameras, demo.width, demo.height, demo.codec,
                                 robot_type="sawyer", state_names=STATE_NAMES, action_names=ACTION_NAMES)
        episodes, frames, attempts = _record_all(demo, writer, show_progress, progress_cls, recorder)
        writer.finish()
        (tmp / MARKER).write_text(json.dumps({"hash": demo_config_hash(demo), "demo": _demo_dict(demo)}, indent=2))
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return DemoSummary(out, episodes, frames, attempts, time.perf_counter() - start)


def _validate(demo: DemoConfig) -> None:
    """Reject a bad demo config before any simulation or file is made."""
    from sim.metaworld_env import ALL_CAMERAS, task_names

    problems = []
    if not demo.tasks or demo.episodes_per_task < 1:
        problems.append("demo.tasks must name at least one task and demo.episodes_per_task must be >= 1")
    unknown = [t for t in demo.tasks if t not in task_names()]
    if unknown:
        problems.append(f"unknown task(s) {unknown}; available: {', '.join(task_names())}")
    if not demo.cameras or any(c not in ALL_CAMERAS for c in demo.cameras):
        problems.append(f"demo.cameras {demo.cameras} must be some of: {', '.join(ALL_CAMERAS)}")
    if demo.width < 16 or demo.height < 16 or demo.width % 2 or demo.height % 2:
        problems.append(f"demo.width/height must be even and >= 16 (yuv420p video), got {demo.width}x{demo.height}")
    if not 0 <= demo.action_noise <= 1:
        problems.append(f"demo.action_noise must lie in [0, 1] (a std in action units of [-1, 1]), got {demo.action_noise}")
    if demo.workers < 0:
        problems.append(f"demo.workers must be >= 0 (0 = one per CPU), got {demo.workers}")
    if not 1 <= demo.max_steps <= 500 or demo.fps < 1:
        problems.append("demo.max_steps must lie in [1, 500] (MetaWorld's limit) and demo.fps must be >= 1")
    if problems:
        raise DemoError("; ".join(problems))


def _record_all(demo: DemoConfig, writer: LeRobotV3Writer, show_progress: bool,
                progress_cls: type, recorder_factory=EpisodeRecorder) -> tuple[int, int, int]:
    """Episodes in task order, attempts in order, failed layouts redrawn: the same dataset for any worker count."""
    total = demo.episodes_per_task * len(demo.tasks)
    episodes = frames = attempts = 0
    workers = worker_count(demo)
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with (progress_cls(*columns, console=get_console(), disable=not show_progress, transient=False) as progress,
          recorder_factory(demo, workers) as recorder):
        bar = progress.add_task(f"demo episodes ({workers} worker{'s' * (workers > 1)})", total=total)
        recorder.expect([(t, a) for t in range(len(demo.tasks)) for a in range(demo.episodes_per_task)])
        for task_index, task in enumerate(demo.tasks):
            wanted = demo.episodes_per_task
            kept, max_attempts = 0, ATTEMPTS_PER_EPISODE * wanted
            for attempt in range(max_attempts):
                if kept == wanted:
                    break
                progress.update(bar, description=f"{task} (attempt {attempt + 1})")
                episode = recorder.get((task_index, attempt))
                attempts += 1
                if not (episode.success or demo.keep_failed):
                    continue
                writer.add_episode(episode.instruction, episode.states, episode.actions, episode.images, episode.seed)
                kept, episodes, frames = kept + 1, episodes + 1, frames + len(episode.states)
                progress.advance(bar)
            if kept < wanted:
                raise DemoError(
                    f"the scripted expert for '{task}' succeeded in only {kept} of {max_attempts} attempts "
                    f"within demo.max_steps={demo.max_steps}; raise demo.max_steps, set demo.keep_failed=true "
                    f"or drop the task")
    return episodes, frames, attempts


def ensure_demo_dataset(demo: DemoConfig, out: Path, progress_cls: type = Progress) -> Path:
    """The demo dataset for `demo` at `out`, generated only if no complete one with the same config is there."""
    marker = Path(out) / MARKER
    if marker.exists() and json.loads(marker.read_text()).get("hash") == demo_config_hash(demo):
        return Path(out)
    summary = generate(demo, Path(out), progress_cls=progress_cls)
    print_summary(summary)
    return Path(out)


def print_summary(summary: DemoSummary) -> None:
    get_console().print(f"demo dataset: {summary.episodes} episodes, {summary.frames} frames "
                        f"({summary.attempts} rollouts) in {summary.seconds:.1f} s -> {summary.path}")


USAGE = "usage: python -m sim.demos --out DIR [demo.KEY=VALUE ...]   (keys: the fields of sim.config.DemoConfig)"


def parse_args(argv: list[str]) -> tuple[Path, DemoConfig]:
    """`--out DIR` and `demo.*` overrides -> (out, DemoConfig); a bad argument exits 2 naming it."""
    out, overrides, args = None, [], list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(__doc__.strip() + "\n\n" + USAGE)
            raise SystemExit(0)
        if arg == "--out" and args:
            out = args.pop(0)
        elif arg.startswith("--out="):
            out = arg.split("=", 1)[1]
        elif arg.startswith("demo.") and "=" in arg:
            overrides.append(arg.removeprefix("demo."))
        else:
            print(f"sim.demos: cannot parse argument {arg!r}\n{USAGE}", file=sys.stderr)
            raise SystemExit(2)
    if out is None:
        print(f"sim.demos: --out DIR is required\n{USAGE}", file=sys.stderr)
        raise SystemExit(2)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(DemoConfig), OmegaConf.from_dotlist(overrides))
    except Exception as err:  # OmegaConf names the key and the expected type
        print(f"sim.demos: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return Path(out), OmegaConf.to_object(merged)


def main(argv: list[str] | None = None) -> None:
    out, demo = parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        print_summary(generate(demo, out))
    except DemoError as err:
        get_console().print(f"[red]demo generation failed:[/red] {err}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
