"""Policies the evaluation loop can drive: anything mapping a batch of requests to action chunks.

A chunk may be as short as one action: a per-step policy (MetaWorld's scripted
expert) returns chunks of length 1 and is asked again after every step, so it
exercises the same loop, batching and success detection as the learned policy.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from model.policy import LightWAMPolicy, Observation
from sim.rollout import Request


class ChunkPolicy(Protocol):
    def act_batch(self, requests: list[Request]) -> list[np.ndarray]:
        """One raw action chunk [h, A] (h >= 1) per request."""
        ...


class ExpertPolicy:
    """The simulator's scripted expert (privileged state, attached to each request by the worker)."""

    needs_expert = True

    def act_batch(self, requests: list[Request]) -> list[np.ndarray]:
        if any(r.expert is None for r in requests):
            raise ValueError("ExpertPolicy needs requests with an expert action (LoopSettings.with_expert=True)")
        return [np.asarray(r.expert, dtype=np.float32)[None] for r in requests]


class ConstantPolicy:
    """Always the same action (e.g. zeros with the gripper open): a smoke test of the plumbing."""

    needs_expert = False

    def __init__(self, action: list[float], horizon: int = 8) -> None:
        self.chunk = np.tile(np.asarray(action, dtype=np.float32), (horizon, 1))

    def act_batch(self, requests: list[Request]) -> list[np.ndarray]:
        return [self.chunk.copy() for _ in requests]


class LearnedPolicy:
    """A trained Light-WAM (`model.policy.LightWAMPolicy`): one batched forward for all waiting simulators."""

    needs_expert = False

    def __init__(self, policy: LightWAMPolicy) -> None:
        self.policy = policy

    def act_batch(self, requests: list[Request]) -> list[np.ndarray]:
        observations = [Observation(r.images, r.state, r.instruction) for r in requests]
        return list(self.policy.act_batch(observations))
