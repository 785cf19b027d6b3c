"""MLflow wiring: where runs go, how checkpoints are registered and found again.

Default: an embedded store in the work directory (sqlite backend + a local
artifact folder), viewable with the `mlflow ui` command printed by
`ui_command`. `MLFLOW_TRACKING_URI` (or `tracking.uri`) points at a real server.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from pipeline.config import Config
from pipeline.workdir import mlflow_dir

# No telemetry from a training job: these machines (and many clusters) have no route out.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")
# A download bar per model load is noise in a job's log (set it to true to see it again).
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402

# "Waiting up to 300 seconds for model version to finish creation" at every registration
logging.getLogger("mlflow.store.model_registry.abstract_store").setLevel(logging.WARNING)


def tracking_uri(cfg: Config) -> str:
    if cfg.tracking.uri:
        return cfg.tracking.uri
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{mlflow_dir(cfg) / 'mlflow.db'}"


def _is_embedded(uri: str) -> bool:
    return uri.startswith("sqlite:///") or uri.startswith("file:")


def setup(cfg: Config) -> str:
    """Point MLflow at the configured store; return the experiment id (created on first use)."""
    uri = tracking_uri(cfg)
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(uri)
    from pipeline.model_card import tag_experiment

    found = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    if found is not None:
        tag_experiment(MlflowClient(), found.experiment_id)
        return found.experiment_id
    artifacts = None
    if _is_embedded(uri):
        artifacts = (mlflow_dir(cfg) / "artifacts").as_uri()
    experiment_id = mlflow.create_experiment(cfg.tracking.experiment, artifact_location=artifacts)
    tag_experiment(MlflowClient(), experiment_id)
    return experiment_id


def runs_page(base: str, cfg: Config) -> str:
    """The experiment's runs table in the UI's "Model training" mode (the UI's own default is GenAI)."""
    from pipeline.model_card import UI_TRAINING_MODE

    found = mlflow.get_experiment_by_name(cfg.tracking.experiment)
    path = f"#/experiments/{found.experiment_id}/runs" if found is not None else "#/experiments"
    return f"{base.rstrip('/')}/{path}?{UI_TRAINING_MODE}"


def ui_command(cfg: Config) -> str:
    uri = tracking_uri(cfg)
    if not _is_embedded(uri):
        return f"open {runs_page(uri, cfg)}"
    return (f"mlflow ui --backend-store-uri {uri} --host 127.0.0.1 --port 5000, "
            f"then open {runs_page('http://127.0.0.1:5000', cfg)}")


def register_checkpoint(cfg: Config, run_id: str, artifact_path: str) -> str:
    """Register `runs:/<run>/<artifact_path>` as a new version of `tracking.registered_model`.

    MLflow 3 only lets `register_model` point at its own logged-model format, so
    the version is created from the artifact URI directly. `models:/<name>@latest`
    then resolves to this newest version: MLflow reserves the `latest` alias and
    resolves it to the highest version itself.
    """
    client = MlflowClient()
    name = cfg.tracking.registered_model
    if client.search_registered_models(filter_string=f"name = '{name}'") == []:
        client.create_registered_model(name)
    run = client.get_run(run_id)
    version = client.create_model_version(name, source=f"{run.info.artifact_uri}/{artifact_path}", run_id=run_id)
    return version.version


def resolve_model(uri: str) -> Path:
    """A local directory for `models:/name@alias`, `models:/name/3`, `runs:/id/path` or a plain path."""
    if uri.startswith(("models:/", "runs:/")):
        return Path(mlflow.artifacts.download_artifacts(uri))
    path = Path(uri).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"model '{uri}': no such checkpoint directory")
    return path
