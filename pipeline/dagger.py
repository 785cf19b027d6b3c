"""`python -m pipeline.dagger model=<policy> [dagger.episodes_per_task=20] [overrides]`

DAgger's data step (Ross, Gordon and Bagnell, 2011). Behaviour cloning only
ever sees the expert's own states, so a learned policy that drifts a little
meets states no demonstration shows. Here the trained policy drives MetaWorld
on new layouts while the scripted expert labels every state it visits; the
result is a new LeRobot dataset that holds the policy's training data and these
on-policy episodes. Train on it with `data.path=<the printed path>`, then run
this again with the new policy for another round.

Layouts are never a demonstration's, an evaluation's (`eval.seed`,
`eval.episodes_per_task`) or one the source dataset already holds, so a second
round with the same `dagger.seed` draws new ones. The policy sees only what it
sees in evaluation; the expert's privileged state only produces the labels.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from pipeline.cli import parse_or_exit
from pipeline.config import Config, SimEnv
from pipeline.console import console
from pipeline.evaluate import demo_seeds, env_specs, instruction_of, print_table, run
from pipeline.preprocess import dataset_root
from pipeline.workdir import workdir
from sim.evaluation import plan_episodes
from sim.lerobot_writer import EPISODES_PATH, LeRobotV3Writer, video_key
from sim.observation import camera_name
from sim.rollout import EnvSpec, EpisodeResult, EpisodeSpec, LoopSettings
from stages.lerobot import LeRobotDataset

MARKER = "dagger.json"  # written last: what the dataset holds and where it came from


def recorded_layouts(root: Path) -> list[tuple[int, str, int]]:
    """(episode index, instruction, layout seed) of each episode of a dataset that records its layouts."""
    path = root / EPISODES_PATH
    if not path.is_file():
        return []
    table = pq.read_table(path)
    if "layout_seed" not in table.column_names:
        return []
    return [(int(i), tasks[0], int(seed)) for i, tasks, seed in zip(table.column("episode_index").to_pylist(),
                                                                     table.column("tasks").to_pylist(),
                                                                     table.column("layout_seed").to_pylist())]


def layout_seeds(root: Path) -> dict[str, set[int]]:
    """Instruction -> the layout seeds a dataset's episodes were recorded on (none if it does not say)."""
    seeds: dict[str, set[int]] = {}
    for _, instruction, seed in recorded_layouts(root):
        seeds.setdefault(instruction, set()).add(seed)
    return seeds


def plan(cfg: Config, envs: list[EnvSpec], recorded: dict[str, set[int]]) -> list[EpisodeSpec]:
    """`dagger.episodes_per_task` layouts per task, none of them a demo, evaluation or recorded layout."""
    demo = demo_seeds(cfg)
    held_out = plan_episodes(envs, cfg.eval.episodes_per_task, cfg.eval.seed, 0, demo)
    evaluation: dict[str, set[int]] = {}
    for e in held_out:
        evaluation.setdefault(e.env.task, set()).add(e.seed)

    def avoid(env: EnvSpec) -> set[int]:
        return demo(env) | evaluation.get(env.task, set()) | recorded.get(instruction_of(env), set())

    return plan_episodes(envs, cfg.dagger.episodes_per_task, cfg.dagger.seed, 0, avoid)


def write_dataset(source: LeRobotDataset, results: list[EpisodeResult], instructions: dict[str, str], out: Path,
                  cfg: Config, meta: dict[str, Any]) -> tuple[int, int]:
    """The source's episodes (its `camera_keys` only), then the labelled on-policy ones; atomic.

    `instructions` maps a simulator task to its instruction. Returns (source episodes, on-policy episodes).
    """
    from sim.metaworld_env import ACTION_NAMES, GOAL_NAMES, STATE_NAMES

    cameras = [camera_name(k) for k in source.camera_keys]
    seeds = {index: seed for index, _, seed in recorded_layouts(source.root)}
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        writer = LeRobotV3Writer(tmp, int(source.fps), cameras, cfg.demo.width, cfg.demo.height, cfg.demo.codec,
                                 robot_type="sawyer",
                                 state_names=STATE_NAMES + (GOAL_NAMES if cfg.demo.goal_in_state else []),
                                 action_names=ACTION_NAMES)
        for episode in source.episodes:
            frames = source.frames(episode)
            images = {c: source.read_images(episode, video_key(c), frames.frame_index) for c in cameras}
            writer.add_episode(episode.task, frames.state, frames.action, images, seeds.get(episode.index))
        for result in results:
            if result.trace is None or len(result.trace.states) == 0:
                continue
            writer.add_episode(instructions[result.task], result.trace.states, result.trace.actions, result.trace.images, result.seed)
        writer.finish()
        (tmp / MARKER).write_text(json.dumps(meta, indent=2))
        if out.exists():
            shutil.rmtree(out)
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return len(source.episodes), sum(r.trace is not None and len(r.trace.states) > 0 for r in results)


def collect(cfg: Config, show_progress: bool = True) -> dict[str, Any]:
    """Roll the policy out on new layouts, label with the expert, write source + on-policy episodes."""
    from pipeline import eval_tracking, tracking
    from pipeline.policy_bundle import PolicyInfo, load_policy
    from sim.policies import BundlePolicy

    dg = cfg.dagger
    if not dg.model:
        raise ValueError("no policy to drive: pass model=models:/<name>@<alias> or model=<bundle dir>")
    if cfg.eval.env != SimEnv.metaworld:
        raise ValueError("DAgger needs MetaWorld's scripted experts to label the states; eval.env is "
                         f"{cfg.eval.env.value}")
    if dg.episodes_per_task < 1:
        raise ValueError(f"dagger.episodes_per_task must be >= 1, got {dg.episodes_per_task}")
    tracking.setup(cfg)
    ref = eval_tracking.resolve(dg.model)
    info = PolicyInfo(**json.loads((ref.bundle / "policy.json").read_text())["info"])
    root = dataset_root(cfg)
    source = LeRobotDataset(root, cameras=list(info.cameras), state_key=cfg.data.state_key,
                            action_key=cfg.data.action_key)
    first = source.read_images(source.episodes[0], source.camera_keys[0], np.zeros(1, dtype=np.int64))
    if first.shape[1:3] != (cfg.demo.height, cfg.demo.width):
        raise ValueError(f"{root}: frames are {first.shape[2]}x{first.shape[1]} but the simulator would render "
                         f"{cfg.demo.width}x{cfg.demo.height}: set demo.width/demo.height to the dataset's")
    out = Path(dg.out).expanduser().resolve() if dg.out else workdir(cfg) / "datasets" / f"dagger-{ref.label}"
    if out == root.resolve():
        raise ValueError(f"dagger.out {out} is the source dataset: choose another directory")
    if out.exists() and not (out / MARKER).is_file():
        raise ValueError(f"refusing to overwrite {out}: it exists and is not a DAgger dataset")

    envs = env_specs(cfg, [camera_name(c) for c in info.cameras], list(info.tasks))
    missing = sorted({instruction_of(e) for e in envs} - set(info.tasks))
    if missing:
        raise ValueError(f"{dg.model}: the policy was not trained on {missing}; it knows {sorted(info.tasks)}")
    episodes = plan(cfg, envs, layout_seeds(root))
    settings = LoopSettings(info.image_height, info.image_width, cfg.eval.replan_every, cfg.demo.fps,
                            current_scale=info.current_frame_scale, record_trace=True)
    console.print(f"DAgger: {ref.uri} ({ref.label}) drives {len(envs)} task(s) x {dg.episodes_per_task} new "
                  f"layouts, the scripted expert labels every state; source {root} ({len(source.episodes)} episodes)")
    start = time.perf_counter()
    summary, results = run(cfg, BundlePolicy(load_policy(ref.bundle)), episodes, settings, show_progress)
    print_table(summary)
    meta = {"model": ref.uri, "registered_model": ref.name, "version": ref.version, "run_id": ref.run_id,
            "source": str(root), "episodes_per_task": dg.episodes_per_task, "seed": dg.seed,
            "replan_every": cfg.eval.replan_every, "on_policy_success": summary["success_mean"],
            "on_policy_tasks": {t: v["success"] for t, v in summary["tasks"].items()},
            "layouts": {e.env.task: [] for e in episodes}}
    for e in episodes:
        meta["layouts"][e.env.task].append(e.seed)
    copied, added = write_dataset(source, results, {e.task: instruction_of(e) for e in envs}, out, cfg, meta)
    console.print(f"DAgger dataset: {copied} source + {added} on-policy episodes "
                  f"({sum(r.steps for r in results)} labelled states) in {time.perf_counter() - start:.0f} s -> {out}")
    console.print(f"next: python -m pipeline.run data.path={out} <the same overrides>")
    return {**meta, "out": str(out), "source_episodes": copied, "on_policy_episodes": added}


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    args = [f"dagger.{a}" if a.startswith("model=") else a for a in args]
    cfg = parse_or_exit(args)
    try:
        collect(cfg)
    except (ValueError, LookupError, FileNotFoundError, KeyError) as err:
        console.print(f"[red]DAgger failed:[/red] {err}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
