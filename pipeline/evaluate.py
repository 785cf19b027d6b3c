"""`python -m pipeline.evaluate model=<models:/name@alias | runs:/id/path | bundle dir> [overrides]`

Closed-loop evaluation of a policy bundle in simulation (MetaWorld, or LIBERO
with the `libero` extra). `model=...` is shorthand for `eval.model=...`.
Rollouts run on `eval.num_workers` parallel simulators (Ray actors; 0 = in
this process). Results: a table per task, `<workdir>/eval/<model>/results.json`
with rollout videos beside it, and, when the model comes from MLflow, metrics
and artifacts on its run plus the `champion` alias when it beats the current one.

`eval.layouts=demo` replays the demo dataset's own layouts instead of held-out
ones: a diagnostic that separates "cannot fit the demonstrations" from "does not
generalise to new layouts". It is logged under `eval_demo/` and never crowns.
"""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from model.policy import camera_name
from pipeline.cli import parse_or_exit
from pipeline.config import Config
from pipeline.console import console
from pipeline.logged_progress import LoggedProgress
from pipeline.workdir import demo_dataset_dir, workdir
from sim.config import EvalLayouts, SimEnv
from sim.evaluation import evaluate, plan_episodes
from sim.policies import ChunkPolicy
from sim.rollout import EnvSpec, EpisodeResult, EpisodeSpec, LoopSettings


def env_specs(cfg: Config, cameras: list[str], policy_tasks: list[str]) -> list[EnvSpec]:
    """One simulator spec per task: from `eval.tasks`, else the policy's training tasks (instruction -> task)."""
    ev = cfg.eval
    if ev.env == SimEnv.libero:
        from sim.libero_env import RESOLUTION, SUITES, expand_tasks

        return [EnvSpec("libero", t.suite, t.name, tuple(cameras), RESOLUTION, RESOLUTION,
                        ev.max_steps_per_suite.get(t.suite, ev.max_steps), task_id=t.task_id,
                        noop_steps=ev.noop_steps, flip_gripper=ev.flip_gripper)
                for t in expand_tasks(list(ev.tasks) or list(SUITES))]
    from sim.metaworld_env import instruction_for, task_names

    tasks = list(ev.tasks)
    if not tasks:
        by_instruction: dict[str, str] = {}
        for name in task_names():
            by_instruction.setdefault(instruction_for(name), name)
        unknown = [t for t in policy_tasks if t not in by_instruction]
        if unknown:
            raise ValueError(f"no MetaWorld task has the instruction(s) {unknown}; set eval.tasks")
        tasks = [by_instruction[t] for t in policy_tasks]
    steps = ev.max_steps_per_suite.get("metaworld", ev.max_steps)
    return [EnvSpec("metaworld", "metaworld", t, tuple(cameras), cfg.demo.height, cfg.demo.width, steps)
            for t in tasks]


def demo_seeds(cfg: Config):
    """The layouts the demo dataset may have used for a task: evaluation never reuses them."""
    from sim.demos import ATTEMPTS_PER_EPISODE, episode_seed

    def seeds(env: EnvSpec) -> set[int]:
        if env.task not in cfg.demo.tasks:
            return set()
        index = cfg.demo.tasks.index(env.task)
        return {episode_seed(cfg.demo.seed, index, a) for a in range(ATTEMPTS_PER_EPISODE * cfg.demo.episodes_per_task)}

    return seeds


def demo_layout_episodes(cfg: Config, envs: list[EnvSpec]) -> list[EpisodeSpec]:
    """The first `eval.episodes_per_task` layouts each task's demonstrations were recorded on."""
    import pyarrow.parquet as pq

    from sim.lerobot_writer import EPISODES_PATH

    if cfg.eval.env != SimEnv.metaworld:
        raise ValueError("eval.layouts=demo replays generated MetaWorld demos; it has no meaning for LIBERO")
    path = demo_dataset_dir(cfg) / EPISODES_PATH
    if not path.is_file():
        raise FileNotFoundError(f"eval.layouts=demo needs the demo dataset the policy was trained on: no {path} "
                                "(pass the preset and demo.* overrides it was trained with)")
    table = pq.read_table(path)
    if "layout_seed" not in table.column_names:
        raise ValueError(f"{path} does not record layout seeds (made by an older version): regenerate the demos")
    seeds: dict[str, list[int]] = {}
    for tasks, seed in zip(table.column("tasks").to_pylist(), table.column("layout_seed").to_pylist()):
        seeds.setdefault(tasks[0], []).append(int(seed))
    plan = []
    for env in envs:
        available = seeds.get(instruction_of(env), [])
        if len(available) < cfg.eval.episodes_per_task:
            raise ValueError(f"{env.task}: the demo dataset has {len(available)} layouts, fewer than "
                             f"eval.episodes_per_task={cfg.eval.episodes_per_task}")
        plan += [EpisodeSpec(env, i, seed, record_video=i < cfg.eval.videos_per_task)
                 for i, seed in enumerate(available[:cfg.eval.episodes_per_task])]
    return plan


def instruction_of(env: EnvSpec) -> str:
    if env.kind == "metaworld":
        from sim.metaworld_env import instruction_for

        return instruction_for(env.task)
    from sim.libero_env import expand_tasks

    return expand_tasks([f"{env.suite}/{env.task_id}"])[0].instruction


def run(cfg: Config, policy: ChunkPolicy, episodes: list[EpisodeSpec], settings: LoopSettings,
        show_progress: bool = True) -> tuple[dict[str, Any], list[EpisodeResult]]:
    """Rollouts with a live progress bar; Ray only when there are parallel workers."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[ok]} ok"), TimeElapsedColumn()]
    session: Any = contextlib.nullcontext()
    if cfg.eval.num_workers > 0:
        from cluster.ray_session import ray_session

        session = ray_session(cfg.cluster)
    with session, LoggedProgress(*columns, console=console, disable=not show_progress) as progress:
        bar = progress.add_task("evaluation", total=len(episodes), ok=0)
        done = {"ok": 0}

        def finished(result: EpisodeResult) -> None:
            done["ok"] += int(result.success)
            progress.update(bar, advance=1, ok=done["ok"], description=f"{result.task} #{result.episode}")

        return evaluate(episodes, policy, settings, cfg.eval.num_workers, finished)


def write_results(out_dir: Path, summary: dict[str, Any], results: list[EpisodeResult], meta: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    videos = out_dir / "videos"
    for r in results:
        if r.video:
            videos.mkdir(exist_ok=True)
            (videos / f"{r.suite}__{r.task}__ep{r.episode:03d}_{'success' if r.success else 'failure'}.mp4").write_bytes(r.video)
    path = out_dir / "results.json"
    path.write_text(json.dumps({**meta, **summary}, indent=2))
    return path


def print_table(summary: dict[str, Any]) -> None:
    table = Table(title="closed-loop evaluation")
    for col in ("suite", "task", "episodes", "success", "95% CI", "mean length"):
        table.add_column(col, justify="left" if col in ("suite", "task") else "right")
    for task, t in summary["tasks"].items():
        table.add_row(t["suite"], task, str(t["episodes"]), f"{t['success']:.0%}",
                      f"{t['ci_low']:.0%}-{t['ci_high']:.0%}", f"{t['mean_length']:.0f}")
    for suite, s in summary["suites"].items():
        table.add_row(f"[bold]{suite}[/bold]", "[bold]all[/bold]", str(s["episodes"]), f"{s['success']:.0%}",
                      f"{s['ci_low']:.0%}-{s['ci_high']:.0%}", f"{s['mean_length']:.0f}")
    console.print(table)
    console.print(f"mean success {summary['success_mean']:.1%} over {summary['episodes']} episodes; "
                  f"{summary['steps_per_second']:.1f} env steps/s, {summary['episodes_per_minute']:.1f} episodes/min")


def evaluate_model(cfg: Config, show_progress: bool = True) -> dict[str, Any]:
    """Resolve `eval.model`, roll it out, write and log the results; returns the results dict."""
    from pipeline import eval_tracking, tracking
    from pipeline.policy_bundle import load_policy, read_info
    from sim.policies import LearnedPolicy

    if not cfg.eval.model:
        raise ValueError("no model to evaluate: pass model=models:/<name>@<alias> or model=<bundle dir>")
    tracking.setup(cfg)
    ref = eval_tracking.resolve(cfg.eval.model)
    info = read_info(ref.bundle)  # cheap checks first
    envs = env_specs(cfg, [camera_name(c) for c in info.cameras], list(info.tasks))
    missing = sorted({instruction_of(e) for e in envs} - set(info.tasks))
    if missing:
        raise ValueError(f"{cfg.eval.model}: the policy was not trained on {missing}; it knows {sorted(info.tasks)}")
    loaded = None if cfg.eval.via_server else load_policy(ref.bundle)
    on_demo_layouts = cfg.eval.layouts == EvalLayouts.demo
    if on_demo_layouts:
        episodes = demo_layout_episodes(cfg, envs)
    else:
        episodes = plan_episodes(envs, cfg.eval.episodes_per_task, cfg.eval.seed, cfg.eval.videos_per_task,
                                 demo_seeds(cfg))
    settings = LoopSettings(cfg.eval.replan_every, cfg.demo.fps)
    console.print(f"evaluating {ref.uri} ({ref.label}): {len(envs)} task(s) x {cfg.eval.episodes_per_task} episodes "
                  f"on {cfg.eval.layouts.value} layouts, {cfg.eval.num_workers} worker(s), "
                  f"replan every {cfg.eval.replan_every} of {info.action_horizon}")
    policy = server_policy(cfg, info) if loaded is None else LearnedPolicy(loaded.policy)
    summary, results = run(cfg, policy, episodes, settings, show_progress)
    previous = eval_tracking.champion_score(ref, cfg.eval.champion_alias)
    meta = {"model": ref.uri, "registered_model": ref.name, "version": ref.version, "run_id": ref.run_id,
            "env": cfg.eval.env.value, "episodes_per_task": cfg.eval.episodes_per_task, "seed": cfg.eval.seed,
            "replan_every": cfg.eval.replan_every, "layouts": cfg.eval.layouts.value}
    out_dir = workdir(cfg) / "eval" / (f"{ref.label}-demo-layouts" if on_demo_layouts else ref.label)
    path = write_results(out_dir, summary, results, meta)
    print_table(summary)
    if ref.run_id:
        eval_tracking.log_results(ref, summary, out_dir, prefix="eval_demo" if on_demo_layouts else "eval")
        console.print(f"logged to MLflow run {ref.run_id}")
    crowned = not on_demo_layouts and eval_tracking.maybe_crown(ref, summary["success_mean"], cfg.eval.champion_alias,
                                                                previous)
    if crowned:
        console.print(f"{ref.label} is the {cfg.eval.champion_alias} (previous: {previous[0] or 'none'})")
    console.print(f"results: {path}")
    return {**meta, **summary, "previous_champion": previous[0], "champion": crowned}


def server_policy(cfg: Config, info) -> ChunkPolicy:
    """`eval.via_server`: the chunks come from a running `pipeline.serve`, which must serve this very policy."""
    from pipeline.serve.client import ServerPolicy

    policy = ServerPolicy(cfg.eval.via_server)
    served = policy.metadata
    if (served.get("image_keys"), served.get("prompts")) != (list(info.cameras), list(info.tasks)):
        raise ValueError(f"{cfg.eval.via_server} serves cameras {served.get('image_keys')} and prompts "
                         f"{served.get('prompts')}, not those of {cfg.eval.model}")
    console.print(f"policy chunks from {cfg.eval.via_server} (serving {served.get('model')})")
    return policy


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    args = [f"eval.{a}" if a.startswith("model=") else a for a in args]
    cfg = parse_or_exit(args)
    try:
        evaluate_model(cfg)
    except (ValueError, LookupError, FileNotFoundError, KeyError) as err:
        console.print(f"[red]evaluation failed:[/red] {err}")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
