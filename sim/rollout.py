"""The closed-loop episode loop: observe, ask the policy for a chunk, execute its first k actions, repeat.

It is written as a resumable state machine (`Worker.next(chunk) -> Step`) rather
than a loop that calls the policy itself, so the policy can live elsewhere: the
evaluation driver collects the waiting observations of every worker, runs one
batched forward pass, and hands each worker its chunk (`sim.evaluation`). A
worker runs its episodes one after another on one simulator, rebuilt only when
the task changes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from sim.video import encode_mp4


class Simulator(Protocol):
    """What the loop needs from an environment (`MetaWorldEnv`, `LiberoEnv`)."""

    instruction: str
    cameras: list[str]

    def reset(self, seed: int) -> dict[str, Any]: ...
    def step(self, action: np.ndarray) -> tuple[dict[str, Any], bool, bool]: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class EnvSpec:
    """How to build one simulator: plain data, so it crosses to a Ray actor unchanged."""

    kind: str  # "metaworld" | "libero"
    suite: str  # "metaworld" or a LIBERO suite name
    task: str  # MetaWorld task name or LIBERO task name
    cameras: tuple[str, ...]  # simulator camera names, in the policy's order
    render_height: int
    render_width: int
    max_steps: int
    task_id: int = 0  # LIBERO: index of the task in its suite
    noop_steps: int = 0  # LIBERO: settle the scene before the policy acts
    flip_gripper: bool = False  # LIBERO: dataset and env disagree on the gripper sign


@dataclass(frozen=True)
class EpisodeSpec:
    env: EnvSpec
    episode: int  # index within its task
    seed: int
    record_video: bool = False


@dataclass(frozen=True)
class LoopSettings:
    replan_every: int  # execute the first k actions of each chunk
    fps: int = 20  # of the rollout videos
    with_expert: bool = False  # attach the scripted expert's action to each request (MetaWorld)


@dataclass
class Request:
    """One observation waiting for a chunk, as the simulator rendered it (the policy resizes)."""

    images: dict[str, np.ndarray]  # simulator camera -> uint8 [H, W, 3]
    state: np.ndarray  # float32 [P] raw proprio
    instruction: str
    expert: np.ndarray | None = None  # privileged expert action (test/benchmark policies only)


@dataclass
class EpisodeResult:
    suite: str
    task: str
    episode: int
    seed: int
    success: bool
    steps: int
    seconds: float
    video: bytes | None = None

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "video"}


@dataclass
class Step:
    """A worker's answer: its next observation (None when it has no episodes left) and what finished."""

    request: Request | None
    finished: list[EpisodeResult] = field(default_factory=list)


def make_env(spec: EnvSpec) -> Simulator:
    if spec.kind == "metaworld":
        from sim.metaworld_env import MetaWorldEnv

        return MetaWorldEnv(spec.task, list(spec.cameras), spec.render_width, spec.render_height, spec.max_steps)
    if spec.kind == "libero":
        from sim.libero_env import LiberoEnv

        return LiberoEnv(spec.suite, spec.task_id, list(spec.cameras), spec.render_height, spec.max_steps,
                         noop_steps=spec.noop_steps, flip_gripper=spec.flip_gripper)
    raise ValueError(f"unknown simulator kind {spec.kind!r}; expected metaworld or libero")


class Worker:
    """Runs a fixed list of episodes on one simulator, one chunk at a time."""

    def __init__(self, episodes: list[EpisodeSpec], settings: LoopSettings) -> None:
        self.queue = list(episodes)
        self.settings = settings
        self.env: Simulator | None = None
        self.env_spec: EnvSpec | None = None
        self.current: EpisodeSpec | None = None

    def next(self, chunk: np.ndarray | None) -> Step:
        """Execute up to k actions of `chunk` (None: just start), then return the next observation."""
        finished: list[EpisodeResult] = []
        if chunk is not None:
            if self.current is None:
                raise RuntimeError("got a chunk but no episode is running")
            result = self._execute(np.asarray(chunk, dtype=np.float32))
            if result is not None:
                finished.append(result)
        if self.current is None:
            if not self.queue:
                self.close()
                return Step(None, finished)
            self._start(self.queue.pop(0))
        return Step(self._request(), finished)

    def _start(self, episode: EpisodeSpec) -> None:
        if self.env is None or self.env_spec != episode.env:
            self.close()
            self.env, self.env_spec = make_env(episode.env), episode.env
        self.current, self.steps, self.started = episode, 0, time.perf_counter()
        self.obs = self.env.reset(episode.seed)
        self.frames: list[np.ndarray] = []
        self._record()

    def _execute(self, chunk: np.ndarray) -> EpisodeResult | None:
        assert self.env is not None and self.current is not None
        success = done = False
        for action in chunk[: self.settings.replan_every]:
            self.obs, success, done = self.env.step(action)
            self.steps += 1
            self._record()
            if done:
                break
        if not done:
            return None
        episode, self.current = self.current, None
        video = encode_mp4(self.frames, self.settings.fps) if self.frames else None
        return EpisodeResult(episode.env.suite, episode.env.task, episode.episode, episode.seed, success,
                             self.steps, time.perf_counter() - self.started, video)

    def _record(self) -> None:
        assert self.current is not None and self.env is not None
        if self.current.record_video:
            images = self.obs["images"]
            self.frames.append(np.concatenate([images[c] for c in self.env.cameras], axis=1))

    def _request(self) -> Request:
        assert self.env is not None
        images = {c: self.obs["images"][c] for c in self.env.cameras}
        expert = self.env.expert_action() if self.settings.with_expert else None  # type: ignore[attr-defined]
        return Request(images, np.asarray(self.obs["state"], dtype=np.float32), self.env.instruction, expert)

    def close(self) -> None:
        if self.env is not None:
            self.env.close()
        self.env, self.env_spec = None, None
