"""Closed-loop evaluation: plan seeded episodes, run them on parallel simulators, summarize.

Parallelism: each worker (a Ray actor, or one in-process worker when
`num_workers == 0`) owns one simulator and a fixed slice of the episodes. The
driver steps them in lockstep rounds: it gathers every waiting observation,
runs one batched policy forward, and sends each worker its chunk. An episode's
outcome depends only on its seed and the policy, never on which worker ran it
or how many there are, so a rerun (serial or parallel) replays the same episodes.
"""

from __future__ import annotations

import math
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sim.policies import ChunkPolicy
from sim.rollout import EnvSpec, EpisodeResult, EpisodeSpec, LoopSettings, Step, Worker

REPO_ROOT = Path(__file__).resolve().parents[1]


def episode_seed(base_seed: int, task: str, episode: int) -> int:
    """Reproducible layout seed for episode `episode` of `task` (keyed by name: task order does not matter)."""
    return int(np.random.SeedSequence([base_seed, zlib.crc32(task.encode()), episode, 0xE7A1]).generate_state(1)[0])


def plan_episodes(envs: list[EnvSpec], episodes_per_task: int, base_seed: int, videos_per_task: int,
                  avoid_seeds: Callable[[EnvSpec], set[int]] | None = None) -> list[EpisodeSpec]:
    """Episode i of each task, with a seed from `base_seed` that is none of `avoid_seeds(task)` (demo seeds).

    LIBERO episodes use the benchmark's fixed initial states instead: seed i = initial state i.
    """
    plan = []
    for env in envs:
        avoid = avoid_seeds(env) if avoid_seeds else set()
        salt = 0
        for i in range(episodes_per_task):
            if env.kind == "libero":
                seed = i
            else:
                seed = episode_seed(base_seed, env.task, i + salt)
                while seed in avoid:  # astronomically rare; keeps eval layouts disjoint from training layouts
                    salt += 1
                    seed = episode_seed(base_seed, env.task, i + salt)
            plan.append(EpisodeSpec(env, i, seed, record_video=i < videos_per_task))
    return plan


def split(episodes: list[EpisodeSpec], parts: int) -> list[list[EpisodeSpec]]:
    """Contiguous, balanced slices: a worker mostly stays on one task, so simulators are rarely rebuilt."""
    parts = max(1, min(parts, len(episodes)))
    bounds = [round(i * len(episodes) / parts) for i in range(parts + 1)]
    return [episodes[bounds[i]:bounds[i + 1]] for i in range(parts)]


def run_episodes(episodes: list[EpisodeSpec], policy: ChunkPolicy, settings: LoopSettings, num_workers: int,
                 on_finish: Callable[[EpisodeResult], None] | None = None) -> list[EpisodeResult]:
    """Run every episode; `num_workers == 0` runs one worker in this process (no Ray)."""
    if not episodes:
        return []
    if num_workers <= 0:
        return _lockstep([Worker(episodes, settings)], lambda ws, cs: [w.next(c) for w, c in zip(ws, cs)],
                         policy, on_finish)
    import ray

    slices = split(episodes, num_workers)
    cpus = ray.cluster_resources().get("CPU", 1.0)
    env_vars = {"PYTHONPATH": _pythonpath(), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
    remote = ray.remote(Worker).options(num_cpus=min(1.0, cpus / len(slices)), runtime_env={"env_vars": env_vars})
    actors = [remote.remote(s, settings) for s in slices]
    try:
        return _lockstep(actors, lambda ws, cs: ray.get([w.next.remote(c) for w, c in zip(ws, cs)]), policy, on_finish)
    finally:
        for actor in actors:
            ray.kill(actor)


def _lockstep(workers: list[Any], advance: Callable[[list[Any], list[Any]], list[Step]], policy: ChunkPolicy,
              on_finish: Callable[[EpisodeResult], None] | None) -> list[EpisodeResult]:
    """Rounds of: every live worker steps (in parallel), then one batched forward for all waiting requests."""
    results: list[EpisodeResult] = []
    live = list(workers)
    steps = advance(live, [None] * len(live))
    while live:
        for step in steps:
            for result in step.finished:
                results.append(result)
                if on_finish:
                    on_finish(result)
        live = [w for w, s in zip(live, steps) if s.request is not None]
        waiting = [s.request for s in steps if s.request is not None]
        if live:
            steps = advance(live, policy.act_batch(waiting))
    return sorted(results, key=lambda r: (r.suite, r.task, r.episode))


def _pythonpath() -> str:
    """Actors import `sim.*` from this checkout (a Ray job's working_dir serves the same purpose)."""
    return os.pathsep.join(p for p in [str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p)


def wilson_interval(successes: int, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval: sensible at 0 or n successes and for few trials, unlike p +- z*se."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass
class Rate:
    episodes: int
    successes: int
    success: float
    ci_low: float
    ci_high: float
    mean_length: float

    @classmethod
    def of(cls, results: list[EpisodeResult]) -> "Rate":
        n, k = len(results), sum(r.success for r in results)
        low, high = wilson_interval(k, n)
        return cls(n, k, k / n if n else 0.0, low, high, float(np.mean([r.steps for r in results])) if n else 0.0)


def summarize(results: list[EpisodeResult], seconds: float) -> dict[str, Any]:
    """Per task and per suite success with 95% Wilson intervals, mean length, throughput.

    `tasks` maps task name -> {suite, episodes, successes, success, ci_low, ci_high, mean_length}.
    """
    by_task: dict[tuple[str, str], list[EpisodeResult]] = {}
    for r in results:
        by_task.setdefault((r.suite, r.task), []).append(r)
    tasks = {t: {"suite": s, **Rate.of(rs).__dict__} for (s, t), rs in by_task.items()}
    suites = {s: Rate.of([r for r in results if r.suite == s]).__dict__ for s in sorted({r.suite for r in results})}
    steps = sum(r.steps for r in results)
    return {
        "success_mean": float(np.mean([t["success"] for t in tasks.values()])) if tasks else 0.0,
        "tasks": tasks,
        "suites": suites,
        "episodes": len(results),
        "env_steps": steps,
        "seconds": seconds,
        "steps_per_second": steps / seconds if seconds > 0 else 0.0,
        "episodes_per_minute": 60 * len(results) / seconds if seconds > 0 else 0.0,
        "per_episode": [r.summary() for r in results],
    }


def evaluate(episodes: list[EpisodeSpec], policy: ChunkPolicy, settings: LoopSettings, num_workers: int,
             on_finish: Callable[[EpisodeResult], None] | None = None) -> tuple[dict[str, Any], list[EpisodeResult]]:
    """Run and summarize; returns (summary, results with their videos)."""
    start = time.perf_counter()
    results = run_episodes(episodes, policy, settings, num_workers, on_finish)
    return summarize(results, time.perf_counter() - start), results
