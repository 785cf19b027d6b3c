"""Where evaluation results go in MLflow: the evaluated model version's run, and the champion alias.

`models:/name@alias` and `models:/name/3` resolve to a registered version (its
run is where training logged); `runs:/id/path` names the run directly; a plain
directory is matched to a run only if its path contains an existing run id
(e.g. a downloaded artifact). The `champion` alias moves to a version when its
`eval/success_mean` beats the current champion's (none yet = beaten).
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlflow import MlflowClient
from mlflow.entities import Metric
from mlflow.exceptions import MlflowException

from pipeline.model_card import record_evaluation
from pipeline.tracking import resolve_model

SUCCESS_MEAN = "eval/success_mean"


@dataclass
class ModelRef:
    uri: str
    bundle: Path
    name: str | None = None  # registered model name
    version: str | None = None
    run_id: str | None = None

    @property
    def label(self) -> str:
        return f"{self.name}-v{self.version}" if self.name else self.bundle.name


def resolve(uri: str) -> ModelRef:
    """A local bundle directory plus, when known, the registered version and its run."""
    client = MlflowClient()
    if uri.startswith("models:/"):
        name, version = registered_version(client, uri.removeprefix("models:/"))
        mv = client.get_model_version(name, version)
        return ModelRef(uri, resolve_model(f"models:/{name}/{version}"), name, version, mv.run_id)
    if uri.startswith("runs:/"):
        return ModelRef(uri, resolve_model(uri), run_id=uri.removeprefix("runs:/").split("/")[0])
    bundle = resolve_model(uri)
    return ModelRef(uri, bundle, run_id=_run_in_path(client, bundle))


def registered_version(client: MlflowClient, ref: str) -> tuple[str, str]:
    """(name, version) of `NAME@ALIAS` or `NAME/VERSION`; the alias `latest` is the highest version."""
    if "@" in ref:
        name, alias = ref.split("@", 1)
        if alias == "latest":  # reserved by MLflow: the highest version
            versions = client.search_model_versions(f"name = '{name}'")
            if not versions:
                raise LookupError(f"registered model {name!r} has no versions")
            return name, str(max(int(v.version) for v in versions))
        return name, str(client.get_model_version_by_alias(name, alias).version)
    name, _, version = ref.partition("/")
    if not version.isdigit():
        raise ValueError(f"models:/{ref}: expected models:/<name>@<alias> or models:/<name>/<version>")
    return name, version


def _run_in_path(client: MlflowClient, path: Path) -> str | None:
    for part in reversed(path.resolve().parts):
        if re.fullmatch(r"[0-9a-f]{32}", part):
            try:
                return client.get_run(part).info.run_id
            except MlflowException:
                continue
    return None


def metrics_of(summary: dict[str, Any], prefix: str = "eval") -> dict[str, float]:
    out = {f"{prefix}/success_mean": summary["success_mean"], f"{prefix}/episodes": summary["episodes"],
           f"{prefix}/steps_per_second": summary["steps_per_second"],
           f"{prefix}/episodes_per_minute": summary["episodes_per_minute"]}
    for task, rate in summary["tasks"].items():
        out[f"{prefix}/success/{task}"] = rate["success"]
        out[f"{prefix}/mean_length/{task}"] = rate["mean_length"]
    for suite, rate in summary["suites"].items():
        out[f"{prefix}/suite_success/{suite}"] = rate["success"]
        out[f"{prefix}/suite_ci_low/{suite}"] = rate["ci_low"]
        out[f"{prefix}/suite_ci_high/{suite}"] = rate["ci_high"]
    return out


def champion_score(ref: ModelRef, alias: str) -> tuple[str | None, float | None]:
    """(version, eval/success_mean) of the current champion, read before this evaluation logs anything."""
    if ref.name is None:
        return None, None
    client = MlflowClient()
    try:
        champ = client.get_model_version_by_alias(ref.name, alias)
    except MlflowException:
        return None, None
    return str(champ.version), client.get_run(champ.run_id).data.metrics.get(SUCCESS_MEAN) if champ.run_id else None


def log_results(ref: ModelRef, summary: dict[str, Any], out_dir: Path, prefix: str = "eval") -> None:
    """Metrics on the model's run; results JSON under <prefix>/, videos under <prefix>/videos/."""
    assert ref.run_id is not None
    client = MlflowClient()
    now = int(time.time() * 1000)
    metrics = [Metric(k, float(v), now, 0) for k, v in metrics_of(summary, prefix).items()]
    for i in range(0, len(metrics), 500):
        client.log_batch(ref.run_id, metrics=metrics[i:i + 500])
    client.log_artifact(ref.run_id, str(out_dir / "results.json"), prefix)
    if prefix == "eval" and ref.name and ref.version:
        record_evaluation(ref.name, ref.version, summary)
    videos = out_dir / "videos"
    if videos.is_dir() and any(videos.iterdir()):
        client.log_artifacts(ref.run_id, str(videos), f"{prefix}/videos")


def maybe_crown(ref: ModelRef, success_mean: float, alias: str, previous: tuple[str | None, float | None]) -> bool:
    """Move `alias` to this version if it beats the previous champion's score (or there is none)."""
    version, score = previous
    if ref.name is None or ref.version is None:
        return False
    if version == ref.version:
        return True  # already the champion
    if score is not None and success_mean <= score:
        return False
    MlflowClient().set_registered_model_alias(ref.name, alias, ref.version)
    return True
