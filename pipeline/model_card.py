"""What the MLflow UI shows about an experiment and a registered policy version.

MLflow 3 opens an experiment without a kind in its GenAI (traces) view; the
`mlflow.experimentKind` tag set to `custom_model_development` opens it on its
training runs. A registered version gets a signature (an `MLmodel` file next
to the policy bundle: observation in, action chunk out), a description naming
its run, cache fingerprint and, once evaluated, its success rate, and tags the
registry can filter on. Which metric and parameter columns the runs table
shows, its grouping, and the UI's GenAI / Model training switch stay per-user
settings of the browser; links with `UI_TRAINING_MODE` open the latter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from mlflow import MlflowClient
from mlflow.models import Model, ModelSignature
from mlflow.types import Schema, TensorSpec

from pipeline.config import Config

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
# The UI's switch between its "GenAI" (default) and "Model training" modes is kept in the browser; a link
# with this query opens the second one, and the UI remembers it.
UI_TRAINING_MODE = "workflowType=machine_learning"


def tag_experiment(client: MlflowClient, experiment_id: str) -> None:
    """Make the UI open the experiment on its training runs (unless a user chose a kind already)."""
    experiment = client.get_experiment(experiment_id)
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)


def signature(cfg: Config, cameras: int) -> ModelSignature:
    """Per control step: the current frame (cameras side by side, in [-1, 1]), raw state, instruction -> chunk."""
    height, width = cfg.cache.image_height, cfg.cache.image_width * cameras
    inputs = Schema([
        TensorSpec(np.dtype(np.float32), (-1, 3, height, width), "pixels"),
        TensorSpec(np.dtype(np.float32), (-1, cfg.model.proprio_dim), "state"),
        TensorSpec(np.dtype(object), (-1,), "task"),  # the instruction, one of the tasks trained on
    ])
    outputs = Schema([TensorSpec(np.dtype(np.float32), (-1, cfg.model.action_horizon, cfg.model.action_dim),
                                 "actions")])
    return ModelSignature(inputs, outputs)


def write_signature(bundle: Path, cfg: Config, cameras: int, run_id: str) -> None:
    """An `MLmodel` file in the bundle: the registry reads a version's schema from it."""
    Model(artifact_path="policy", run_id=run_id, signature=signature(cfg, cameras)).save(bundle / "MLmodel")


def describe_version(cfg: Config, version: str, run_id: str, run_name: str, fingerprint: str) -> None:
    """Description and tags of a freshly registered version; the evaluation fills in its result later."""
    client = MlflowClient()
    name = cfg.tracking.registered_model
    client.update_model_version(name, version, description=(
        f"Light-WAM policy from run {run_name} ({run_id}), preset {cfg.preset}, {cfg.train.steps} steps, "
        f"cache {fingerprint}. Not evaluated yet."))
    for key, value in {"cache_fingerprint": fingerprint, "preset": cfg.preset, "run_name": run_name,
                       "train_steps": str(cfg.train.steps)}.items():
        client.set_model_version_tag(name, version, key, value)


def record_evaluation(name: str, version: str, summary: dict[str, Any]) -> None:
    """The version's headline result, where the registry shows it: description and tags."""
    client = MlflowClient()
    mv = client.get_model_version(name, version)
    base = (mv.description or "").split(" Not evaluated yet.")[0].split(" Closed-loop success")[0]
    tasks = ", ".join(f"{t} {s['success']:.0%}" for t, s in summary["tasks"].items())
    client.update_model_version(name, version, description=(
        f"{base} Closed-loop success {summary['success_mean']:.1%} over {summary['episodes']} episodes "
        f"({tasks})."))
    client.set_model_version_tag(name, version, "eval_success_mean", f"{summary['success_mean']:.4f}")
    client.set_model_version_tag(name, version, "eval_episodes", str(summary["episodes"]))
