"""Registering the prior's artifacts (VAE, DiT) and finding a finished run again by its content tag."""

from __future__ import annotations

import mlflow
from mlflow import MlflowClient

from pipeline.config import Config


def register_version(cfg: Config, run_id: str, artifact_path: str, name: str) -> str:
    """A new version of registered model `name` pointing at `runs:/<run>/<artifact_path>`; returns its URI."""
    client = MlflowClient()
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name)
    run = client.get_run(run_id)
    version = client.create_model_version(name, source=f"{run.info.artifact_uri}/{artifact_path}", run_id=run_id)
    return f"models:/{name}/{version.version}"


def registered_run(experiment_id: str, tag: str, value: str, name: str) -> str | None:
    """`models:/NAME/VERSION` of a FINISHED run tagged `tag=value` that registered a version of `name`."""
    runs = mlflow.search_runs([experiment_id], filter_string=f"tags.`{tag}` = '{value}' and attributes.status = 'FINISHED'",
                              output_format="list")
    client = MlflowClient()
    for run in runs:
        versions = client.search_model_versions(f"name = '{name}' and run_id = '{run.info.run_id}'")
        if versions:
            return f"models:/{name}/{max(int(v.version) for v in versions)}"
    return None
