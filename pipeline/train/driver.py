"""The training driver: the MLflow run around one Ray Train DDP fit.

The driver owns the MLflow run (params, tags, artifacts, final status, model
registry); rank 0 logs metrics and plots into it; Ray Train owns workers,
checkpoints and restarts. The run name defaults to a hash of the config, so
re-running the same config continues its run and any override starts a new one.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import mlflow
import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer

from pipeline import tracking
from pipeline.cli import parse_or_exit, to_flat_dict, to_yaml
from pipeline.config import Config
from pipeline.console import console
from pipeline.model_card import describe_version, write_signature
from pipeline.policy_bundle import write_bundle
from pipeline.preprocess import open_cache_for
from pipeline.pretrained import describe, resolve_config_paths
from pipeline.train.allocator import worker_env
from pipeline.train.data import split_cache
from pipeline.train.progress import TrainingProgress
from pipeline.train.resume import checkpoint_step, checkpoint_to_resume
from pipeline.train.worker import train_loop_per_worker
from pipeline.workdir import ray_storage
from stages.action_free import require_actions
from stages.cache_loader import CacheHandle

RUN_NAME_TAG = "lightwam.run_name"
FINGERPRINT_TAG = "lightwam.cache_fingerprint"


@dataclass
class TrainResult:
    run_id: str
    run_name: str
    model_version: str
    model_uri: str
    final_metrics: dict[str, float]
    skipped: bool = False


def run_name(cfg: Config) -> str:
    """Explicit `train.run_name`, else `<preset>-<hash of what shapes the trained weights>`."""
    if cfg.train.run_name:
        return cfg.train.run_name
    flat = {k: v for k, v in to_flat_dict(cfg).items()
            if k.split(".")[0] in ("cache", "model", "train", "data", "demo") and k != "demo.workers"}
    digest = hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{cfg.preset}-{digest}"


def _find_run(experiment_id: str, name: str):
    runs = mlflow.search_runs([experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{name}'",
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    return runs[0] if runs else None


def _registered_version(run_id: str, model_name: str) -> str | None:
    versions = mlflow.MlflowClient().search_model_versions(f"name = '{model_name}' and run_id = '{run_id}'")
    return max((v.version for v in versions), key=int, default=None)


def _trainer(cfg: Config, cache: CacheHandle, name: str, run_id: str, uri: str, recovered: Path | None) -> TorchTrainer:
    tc = cfg.train
    cpus = int(ray.cluster_resources().get("CPU", 1))
    threads = max(1, cpus // tc.num_workers) if not tc.use_gpu else 4
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": cfg, "cache": cache, "cfg_yaml": to_yaml(cfg), "mlflow_run_id": run_id,
                           "tracking_uri": uri,
                           "threads_per_worker": threads,
                           "resume_dir": str(recovered) if recovered else None},
        torch_config=TorchConfig(backend="nccl" if tc.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=tc.num_workers, use_gpu=tc.use_gpu,
                                     resources_per_worker={"CPU": 1} if not tc.use_gpu else {"CPU": 1, "GPU": 1}),
        run_config=RunConfig(
            name=name,
            storage_path=str(ray_storage(cfg)),
            failure_config=FailureConfig(max_failures=tc.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            worker_runtime_env={"env_vars": worker_env(tc.allocator)},
        ),
    )


def train(cfg: Config, cache: CacheHandle | None = None) -> TrainResult:
    """Train (or continue, or skip when already finished) and register the final checkpoint."""
    resolve_config_paths(cfg)  # models:/ URIs -> local diffusers directories
    cache = cache or open_cache_for(cfg)
    require_actions(cache)
    training, _ = split_cache(cache, cfg.train.heldout_shards)  # a split that leaves nothing fails before Ray
    if len(training.shard_paths) < cfg.train.num_workers:
        raise ValueError(f"cache {cache.cache_dir}: {len(training.shard_paths)} training shard(s) "
                         f"({cfg.train.heldout_shards} held out) cannot feed train.num_workers={cfg.train.num_workers}; "
                         "lower cache.samples_per_shard and rebuild the cache")
    experiment_id = tracking.setup(cfg)
    uri = tracking.tracking_uri(cfg)
    name = run_name(cfg)
    previous = _find_run(experiment_id, name)
    if previous is not None and previous.data.metrics.get("step", 0) >= cfg.train.steps:
        version = _registered_version(previous.info.run_id, cfg.tracking.registered_model)
        if previous.info.status == "FINISHED" and version is not None:
            console.print(f"train: run '{name}' already finished (MLflow run {previous.info.run_id}, "
                          f"model version {version}): skipped")
            return TrainResult(previous.info.run_id, name, version, f"models:/{cfg.tracking.registered_model}/{version}",
                               dict(previous.data.metrics), skipped=True)

    # an unfinished (crashed, killed) or shorter run of the same name is continued from its last checkpoint
    resume_id = previous.info.run_id if previous is not None else None
    with mlflow.start_run(run_id=resume_id, experiment_id=experiment_id, run_name=None if resume_id else name) as run:
        run_id = run.info.run_id
        if resume_id:
            console.print(f"train: continuing run '{name}' (MLflow run {run_id})")
            mlflow.MlflowClient().set_terminated(run_id, "RUNNING")
        # the same config gives the same values, so re-logging on resume is harmless
        mlflow.log_params({k: str(v)[:500] for k, v in to_flat_dict(cfg).items()})
        mlflow.set_tags({RUN_NAME_TAG: name, FINGERPRINT_TAG: cache.fingerprint, "lightwam.preset": cfg.preset,
                         "lightwam.backbone": describe(cfg.model.backbone.pretrained_path, cfg),
                         "lightwam.vae": describe(cfg.cache.vae.pretrained_path, cfg)})
        mlflow.log_text(to_yaml(cfg), "config.yaml")
        mlflow.log_dict(cache.stats, "normalization_stats.json")
        console.print(f"train: run '{name}': {cfg.train.steps} steps x {cfg.train.num_workers} workers, "
                      f"batch {cfg.train.batch_size}/worker, cache {cache.fingerprint[:12]}")
        recovered = checkpoint_to_resume(ray_storage(cfg) / name)
        try:
            with TrainingProgress(run_id, cfg.train.steps):
                result = _trainer(cfg, cache, name, run_id, uri, recovered).fit()
        except BaseException as err:
            status = "KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED"
            mlflow.end_run(status=status)
            raise
        if result.checkpoint is not None:
            final = result.checkpoint.as_directory()
        elif recovered is not None and (checkpoint_step(recovered) or 0) >= cfg.train.steps:
            final = nullcontext(str(recovered))  # stopped after its last checkpoint: nothing was left to train
        else:
            mlflow.end_run(status="FAILED")
            raise RuntimeError(f"training run '{name}' produced no checkpoint")

        # The policy bundle: weights + what inference needs (stats, text embeddings, VAE identity).
        with final as ckpt, tempfile.TemporaryDirectory() as tmp:
            bundle = write_bundle(Path(tmp) / "policy", Path(ckpt) / "model.safetensors", cfg, cache)
            write_signature(bundle, cfg, len(cache.manifest["identity"]["data.cameras"]), run_id)
            mlflow.log_artifacts(str(bundle), "policy")
        version = tracking.register_checkpoint(cfg, run_id, "policy")
        describe_version(cfg, version, run_id, name, cache.fingerprint)
        metrics = {k: float(v) for k, v in (result.metrics or {}).items() if isinstance(v, (int, float))}
    model_uri = f"models:/{cfg.tracking.registered_model}/{version}"
    console.print(f"train: finished: MLflow run {run_id}, registered {model_uri} "
                  f"(also models:/{cfg.tracking.registered_model}@latest)")
    return TrainResult(run_id, name, version, model_uri, metrics)


def main(argv: list[str] | None = None) -> None:
    from cluster.ray_session import ray_session
    from pipeline.preprocess import ensure_cache

    cfg = parse_or_exit(argv)
    with ray_session(cfg.cluster):
        result = train(cfg, ensure_cache(cfg))
    console.print(f"MLflow run {result.run_id}; model {result.model_uri}")
    console.print(f"view it: {tracking.ui_command(cfg)}")


if __name__ == "__main__":
    main()
