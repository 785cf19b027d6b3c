"""`python -m pipeline.prior.pretrain [overrides]`: pretrain the Wan DiT on a cache's video and register it.

All of the DiT's weights train (no LoRA, no expert) with Light-WAM's video
objective (flow matching, text-conditioned, latent frame 0 clean), under Ray
Train DDP with checkpoints; the driver owns the MLflow run. The result is saved
with `save_pretrained` under `transformer/` of a Wan-style directory, logged and
registered as `pretrain.registered_model`, so Light-WAM loads it with
`model.backbone.pretrained_path=models:/wan-prior@latest` exactly as it would
load Wan2.1's transformer. The run name is a hash of what shapes the weights:
the same command continues a killed run from its last checkpoint, and skips a
finished one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path

import mlflow
import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchConfig, TorchTrainer
from safetensors.torch import load_file

from model.backbone import load_dit
from pipeline import tracking
from pipeline.cli import parse_or_exit, to_flat_dict, to_yaml
from pipeline.config import Config
from pipeline.console import console
from pipeline.preprocess import open_cache_for
from pipeline.pretrained import describe, resolve_config_paths
from pipeline.prior.worker import pretrain_loop_per_worker
from pipeline.registry import register_version, registered_run
from pipeline.train.allocator import worker_env
from pipeline.train.progress import TrainingProgress
from pipeline.train.resume import checkpoint_to_resume
from pipeline.workdir import ray_storage
from stages.cache_loader import CacheHandle

RUN_TAG = "lightwam.pretrain_run"
# Light-WAM's own backbone settings: they do not change what pretraining trains
IGNORED = tuple(f"model.backbone.{k}" for k in ("freeze", "lora_", "adapter_", "pretrained_path", "subfolder"))


def pretrain_name(cfg: Config, cache: CacheHandle) -> str:
    if cfg.pretrain.run_name:
        return cfg.pretrain.run_name
    flat = {k: v for k, v in to_flat_dict(cfg).items()
            if k.startswith(("model.backbone.", "model.flow_shift", "train.", "pretrain."))
            and k not in ("train.num_workers", "train.run_name", "train.steps", "pretrain.registered_model",
                          "pretrain.before_run")
            and not k.startswith(IGNORED)}
    flat["cache"] = cache.fingerprint
    return "prior-" + hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _trainer(cfg: Config, cache: CacheHandle, name: str, run_id: str) -> TorchTrainer:
    tc = cfg.train
    recovered = checkpoint_to_resume(ray_storage(cfg) / name)
    cpus = int(ray.cluster_resources().get("CPU", 1))
    return TorchTrainer(
        pretrain_loop_per_worker,
        train_loop_config={"cfg": cfg, "cache": cache, "mlflow_run_id": run_id,
                           "tracking_uri": tracking.tracking_uri(cfg),
                           "threads_per_worker": max(1, cpus // tc.num_workers) if not tc.use_gpu else 4,
                           "resume_dir": str(recovered) if recovered else None},
        torch_config=TorchConfig(backend="nccl" if tc.use_gpu else "gloo"),
        scaling_config=ScalingConfig(num_workers=tc.num_workers, use_gpu=tc.use_gpu,
                                     resources_per_worker={"CPU": 1} if not tc.use_gpu else {"CPU": 1, "GPU": 1}),
        run_config=RunConfig(name=name, storage_path=str(ray_storage(cfg)),
                             failure_config=FailureConfig(max_failures=tc.max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2),
                             worker_runtime_env={"env_vars": worker_env(tc.allocator)}),
    )


def _find_run(experiment_id: str, name: str):
    runs = mlflow.search_runs([experiment_id], filter_string=f"tags.`{RUN_TAG}` = '{name}'",
                              order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    return runs[0] if runs else None


def pretrain(cfg: Config, cache: CacheHandle | None = None) -> str:
    """Pretrain (or continue, or skip when registered) and return the prior's `models:/NAME/VERSION`."""
    resolve_config_paths(cfg)
    cache = cache or open_cache_for(cfg)
    training_shards = len(cache.shard_paths) - cfg.pretrain.heldout_shards
    if training_shards < cfg.train.num_workers:
        raise ValueError(f"cache {cache.cache_dir}: {len(cache.shard_paths)} shards, {cfg.pretrain.heldout_shards} held "
                         f"out, leave {training_shards} for {cfg.train.num_workers} workers; lower "
                         "cache.samples_per_shard (or train.num_workers)")
    experiment_id = tracking.setup(cfg)
    name = pretrain_name(cfg, cache)
    done = registered_run(experiment_id, RUN_TAG, name, cfg.pretrain.registered_model)
    if done:
        console.print(f"pretrain: '{name}' already finished and registered as {done}: skipped")
        return done
    previous = _find_run(experiment_id, name)
    resume_id = previous.info.run_id if previous is not None else None
    with mlflow.start_run(run_id=resume_id, experiment_id=experiment_id, run_name=None if resume_id else name) as run:
        if resume_id:
            console.print(f"pretrain: continuing run '{name}' (MLflow run {resume_id})")
            mlflow.MlflowClient().set_terminated(resume_id, "RUNNING")
        logged = previous.data.params if previous is not None else {}  # a continued run may use other workers
        mlflow.log_params({k: str(v)[:500] for k, v in to_flat_dict(cfg).items()
                           if k.startswith(("model.backbone.", "model.flow_shift", "train.", "pretrain.", "cache."))
                           and k not in logged})
        mlflow.set_tags({RUN_TAG: name, "lightwam.pretrain_cache": cache.fingerprint,
                         "lightwam.vae": describe(cfg.cache.vae.pretrained_path, cfg)})
        mlflow.log_text(to_yaml(cfg), "config.yaml")
        console.print(f"pretrain: run '{name}': {cfg.pretrain.steps} steps x {cfg.train.num_workers} workers, "
                      f"batch {cfg.train.batch_size}/worker, cache {cache.fingerprint[:12]} "
                      f"({len(cache.shard_paths)} shards, {cfg.pretrain.heldout_shards} held out)")
        try:
            with TrainingProgress(run.info.run_id, cfg.pretrain.steps):
                result = _trainer(cfg, cache, name, run.info.run_id).fit()
        except BaseException as err:
            mlflow.end_run(status="KILLED" if isinstance(err, KeyboardInterrupt) else "FAILED")
            raise
        if result.checkpoint is None:
            mlflow.end_run(status="FAILED")
            raise RuntimeError(f"pretraining run '{name}' produced no checkpoint")
        arch = dataclasses.replace(cfg.model.backbone, pretrained_path="")
        dit = load_dit(arch)
        with result.checkpoint.as_directory() as ckpt, tempfile.TemporaryDirectory() as tmp:
            dit.load_state_dict(load_file(str(Path(ckpt) / "model.safetensors")))
            dit.save_pretrained(Path(tmp) / "transformer")
            mlflow.log_artifacts(tmp, "wan")
        uri = register_version(cfg, run.info.run_id, "wan", cfg.pretrain.registered_model)
    console.print(f"pretrain: registered {uri}; Light-WAM loads it with model.backbone.pretrained_path={uri}")
    return uri


def main(argv: list[str] | None = None) -> None:
    from cluster.ray_session import ray_session
    from pipeline.preprocess import ensure_cache

    cfg = parse_or_exit(argv)
    with ray_session(cfg.cluster):
        pretrain(cfg, ensure_cache(cfg))


if __name__ == "__main__":
    main()
