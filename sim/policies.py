"""Policies the evaluation loop can drive: anything mapping a batch of requests to action chunks.

A chunk may be as short as one action: a per-step policy (MetaWorld's scripted
expert) returns chunks of length 1 and is asked again after every step, so it
exercises the same loop, batching and success detection as the learned policy.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from sim.observation import to_pixels
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


class BundlePolicy:
    """A trained Light-WAM policy bundle (`pipeline.policy_bundle.load_policy`), batched."""

    needs_expert = False

    def __init__(self, loaded) -> None:  # LoadedPolicy; untyped to keep this module free of the model stack
        self.loaded = loaded

    @property
    def cameras(self) -> list[str]:
        return list(self.loaded.info.cameras)

    def act_batch(self, requests: list[Request]) -> list[np.ndarray]:
        pixels = to_pixels(np.stack([r.image for r in requests]))
        states = torch.from_numpy(np.stack([r.state for r in requests]))
        current = to_pixels(np.stack([r.current for r in requests])) if requests[0].current is not None else None
        chunks = act_batch(self.loaded, pixels, states, [r.instruction for r in requests], current)
        return list(chunks.numpy())


def require_known(tasks: list[str], known) -> None:
    """A policy only knows the instructions it was trained on: name the others."""
    unknown = sorted(set(tasks) - set(known))
    if unknown:
        raise KeyError(f"task(s) {unknown} were not in the training data; known: {sorted(known)}")


@torch.inference_mode()
def act_batch(loaded, pixels: torch.Tensor, states: torch.Tensor, tasks: list[str],
              current: torch.Tensor | None = None) -> torch.Tensor:
    """pixels [B, 3, H, W] in [-1, 1], raw states [B, P], task texts -> raw action chunks [B, H, A].

    `current` [B, 3, sH, sW]: the same frames larger, for a policy trained with cache.current_frame_scale > 1
    (the VAE reads `pixels`, the expert's pixel path `current`). The batched twin of `LightWAMPolicy.act`:
    same normalization, one forward pass for B observations.
    """
    require_known(tasks, loaded.text)
    policy = loaded.policy
    texts = [loaded.text[t] for t in tasks]
    length = max(e.shape[0] for e, _ in texts)
    emb = torch.zeros(len(tasks), length, texts[0][0].shape[1])
    mask = torch.zeros(len(tasks), length, dtype=torch.bool)
    for i, (e, m) in enumerate(texts):
        emb[i, : e.shape[0]], mask[i, : e.shape[0]] = e, m
    batch = {
        "current_pixels": pixels.to(policy.device, policy.vae.dtype)[:, :, None],
        "proprio": policy.state_norm.normalize(states.to(policy.device, torch.float32)).to(policy.dtype),
        "text": emb.to(policy.device, policy.dtype),
        "text_mask": mask.to(policy.device),
    }
    if current is not None:
        batch = dict(batch, current_latent=policy.predict_latent(batch["current_pixels"]))
        batch["current_pixels"] = current.to(policy.device, policy.vae.dtype)[:, :, None]
    actions = policy.predict(batch)
    return policy.action_norm.denormalize(actions.float()).cpu()
