"""The served policy: loaded once, described in the metadata frame, called by the server's one worker thread.

`infer` is the single place the server touches the model: observation in, raw action chunk out, prepared
exactly as closed-loop evaluation prepares it (cameras resized like the cache and joined in the policy's
order, pixels to [-1, 1], the instruction's cached embedding from the bundle, actions unnormalised).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from model.policy import Observation, camera_name
from pipeline.config import Config
from pipeline.serve.config import ServeConfig
from pipeline.serve.protocol import ObservationSpec


@dataclass
class ServedPolicy:
    loaded: Any  # pipeline.policy_bundle.LoadedPolicy
    spec: ObservationSpec
    metadata: dict[str, Any]  # the first frame every client receives


def load_served(cfg: Config) -> ServedPolicy:
    """Resolve `serve.model` like evaluation resolves `eval.model` and load the bundle onto the CPU."""
    from pipeline import eval_tracking, tracking
    from pipeline.policy_bundle import load_policy

    if not cfg.serve.model:
        raise ValueError("no model to serve: pass model=models:/<name>@<alias>, model=runs:/<id>/policy "
                         "or model=<bundle dir>")
    if cfg.serve.model.startswith(("models:/", "runs:/")):
        tracking.setup(cfg)
        ref = eval_tracking.resolve(cfg.serve.model)
    else:  # a bundle directory: serving needs no run lookup, so the MLflow store is neither opened nor created
        ref = eval_tracking.ModelRef(cfg.serve.model, tracking.resolve_model(cfg.serve.model))
    loaded = load_policy(ref.bundle)
    return describe(loaded, cfg, {"model": ref.uri, "registered_model": ref.name, "model_version": ref.version,
                                  "run_id": ref.run_id, "bundle": ref.bundle.name})


def describe(loaded: Any, cfg: Config, source: dict[str, Any]) -> ServedPolicy:
    info = loaded.info
    policy = loaded.policy
    spec = ObservationSpec(tuple(info.cameras), int(policy.state_norm.low.shape[0]), tuple(info.tasks))
    metadata = {
        "server": "light-wam", "protocol": "openpi-websocket-msgpack",
        **spec.describe(),
        "policy_image_height": info.image_height, "policy_image_width": info.image_width,
        "action_dim": int(policy.action_norm.low.shape[0]), "action_horizon": info.action_horizon,
        "action_units": "raw (the dataset's units, unnormalised)",
        "control_hz": cfg.demo.fps, "replan_every": cfg.eval.replan_every,
        "max_message_bytes": max_message_bytes(cfg.serve),
        **{k: v for k, v in source.items() if v is not None},
    }
    json.dumps(metadata)  # plain data only: a client in any language can read it
    return ServedPolicy(loaded, spec, metadata)


def max_message_bytes(cfg: ServeConfig) -> int:
    return int(cfg.max_message_mib * 2**20)


def infer(served: ServedPolicy, observation: Observation) -> np.ndarray:
    """float32 [action_horizon, action_dim] for one validated observation: the policy evaluation calls."""
    return served.loaded.policy.act(observation).astype(np.float32, copy=False)


def dummy_observation(served: ServedPolicy) -> Observation:
    """A mid-grey frame per camera at the policy size, a zero state, the first known prompt: the warm-up input."""
    info = served.loaded.info
    image = np.full((info.image_height, info.image_width, 3), 128, dtype=np.uint8)
    return Observation({camera_name(c): image for c in served.spec.cameras}, np.zeros(served.spec.state_dim, np.float32),
                       served.spec.prompts[0])
