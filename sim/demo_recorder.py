"""Record scripted-expert episodes, in parallel processes, handed back in the order a serial run records them.

Rendering and physics run on one core per simulator, so `demo.workers` spawned
processes record several episodes at once (MT10 at 20 episodes per task: 12
minutes serially on a 2-core CPU). Each episode depends only on its (task,
attempt) seed and the caller consumes them in a fixed order, so the dataset is
the same whatever the number of workers.
"""

from __future__ import annotations

import atexit
import multiprocessing
import os
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sim.config import DemoConfig

if TYPE_CHECKING:  # the simulator is imported only when recording, so an up-to-date check stays instant
    from sim.metaworld_env import MetaWorldEnv

Key = tuple[int, int]  # (task index, attempt)


@dataclass
class Episode:
    """One recorded rollout: frame t holds the observation before action t."""

    task: str
    instruction: str
    seed: int
    success: bool
    states: np.ndarray  # float32 [T, 4]
    actions: np.ndarray  # float32 [T, 4]
    images: dict[str, np.ndarray]  # camera -> uint8 [T, H, W, 3]


def episode_seed(base_seed: int, task_index: int, attempt: int) -> int:
    """Distinct, reproducible layout seed per (config seed, task, attempt)."""
    return int(np.random.SeedSequence([base_seed, task_index, attempt]).generate_state(1)[0])


def record_episode(env: MetaWorldEnv, seed: int, action_noise: float = 0.0) -> Episode:
    """Roll out the scripted expert from the layout of `seed` until success or max_steps.

    With `action_noise` > 0 the executed action is the expert's plus seeded Gaussian noise, and the
    recorded action stays the expert's own at the state reached (DART).
    """
    obs = env.reset(seed)
    noise = np.random.default_rng([seed, 1])  # its own stream: the layout alone depends on `seed`
    states, actions, frames = [], [], {cam: [] for cam in env.cameras}
    done, success = False, False
    while not done:
        action = env.expert_action()
        states.append(obs["state"])
        actions.append(action)
        for cam in env.cameras:
            frames[cam].append(obs["images"][cam])
        executed = action + np.float32(action_noise) * noise.standard_normal(action.shape, np.float32) \
            if action_noise > 0 else action
        obs, success, done = env.step(executed)
    return Episode(env.task, env.instruction, seed, success, np.stack(states), np.stack(actions),
                   {cam: np.stack(f) for cam, f in frames.items()})


class _Simulators:
    """The one simulator a process keeps, rebuilt only when the task changes."""

    def __init__(self) -> None:
        self.task: str | None = None
        self.env: MetaWorldEnv | None = None
        self.closes_at_exit = False

    def record(self, demo: DemoConfig, key: Key) -> Episode:
        from sim.metaworld_env import MetaWorldEnv

        task_index, attempt = key
        task = demo.tasks[task_index]
        if self.task != task:
            self.close()
            self.env, self.task = MetaWorldEnv(task, demo.cameras, demo.width, demo.height,
                                              demo.max_steps), task
        return record_episode(self.env, episode_seed(demo.seed, task_index, attempt), demo.action_noise)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env, self.task = None, None


_WORKER_SIMULATORS = _Simulators()  # per worker process


def _record_in_worker(demo: DemoConfig, key: Key) -> Episode:
    episode = _WORKER_SIMULATORS.record(demo, key)
    if not _WORKER_SIMULATORS.closes_at_exit:
        # registered after mujoco's own EGL teardown, so it runs before it (atexit is last in, first out):
        # the renderer is released while EGL still exists, instead of an EGLError traceback at exit
        atexit.register(_WORKER_SIMULATORS.close)
        _WORKER_SIMULATORS.closes_at_exit = True
    return episode


def worker_count(demo: DemoConfig) -> int:
    """`demo.workers`, or one per CPU (0), never more than there are episodes to record."""
    wanted = demo.workers or os.cpu_count() or 1
    return max(1, min(wanted, demo.episodes_per_task * len(demo.tasks)))


class EpisodeRecorder:
    """`get(key)` returns the episode of (task index, attempt); keys announced with `expect` are recorded ahead."""

    def __init__(self, demo: DemoConfig, workers: int) -> None:
        self.demo = demo
        self._local = _Simulators()
        # spawn, not fork: the parent may hold a Ray session, threads and an EGL context
        self._pool = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
                      if workers > 1 else None)
        self._ahead = 2 * workers  # enough queued work to keep every worker busy, bounded memory
        self._expected: deque[Key] = deque()
        self._running: dict[Key, Future] = {}
        self._consumed: set[Key] = set()

    def expect(self, keys: list[Key]) -> None:
        self._expected.extend(keys)

    def get(self, key: Key) -> Episode:
        if self._pool is None:
            return self._local.record(self.demo, key)
        self._top_up()
        if key not in self._running:  # not announced (a redrawn attempt), or beyond the look-ahead
            self._running[key] = self._pool.submit(_record_in_worker, self.demo, key)
        episode = self._running.pop(key).result()
        self._consumed.add(key)
        self._top_up()
        return episode

    def _top_up(self) -> None:
        while self._expected and len(self._running) < self._ahead:
            key = self._expected.popleft()
            if key not in self._running and key not in self._consumed:
                self._running[key] = self._pool.submit(_record_in_worker, self.demo, key)

    def close(self) -> None:
        self._local.close()
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> EpisodeRecorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
