"""Ray Train DDP co-training from a real cache, tracked in a real MLflow store.

Tiny everything: a synthetic LeRobot v3 dataset (real mp4s), a tiny VAE and
DiT, two gloo workers on the loopback cluster.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import mlflow
import psutil
import pytest
import torch
from conftest import subprocess_env
from lerobot_fixtures import write_v3_dataset

from model.checkpoint import load_checkpoint
from pipeline import tracking
from pipeline.cli import load_config
from pipeline.policy_bundle import load_policy
from pipeline.preprocess import open_cache_for, preprocess
from pipeline.train import FINGERPRINT_TAG, allocator, train
from pipeline.train.data import batches
from pipeline.train.worker import MALLOC_TAG

TINY = [
    "cache.image_height=32", "cache.image_width=32", "cache.num_frames=5", "cache.frame_stride=2",
    "cache.action_horizon=4", "cache.sample_stride=1", "cache.samples_per_shard=8", "cache.encode_batch_size=8",
    "cache.vae.base_dim=8", "cache.vae.dim_mult=[1,1,1,1]", "cache.vae.num_res_blocks=1",
    "cache.text.encoder=minilm", "cache.text.max_tokens=8", "cache.text.dim=384",
    "model.backbone.num_layers=2", "model.backbone.num_attention_heads=2", "model.backbone.attention_head_dim=16",
    "model.backbone.ffn_dim=64", "model.backbone.text_dim=384", "model.backbone.freq_dim=32",
    "model.backbone.adapter_layers=[0,1]", "model.backbone.adapter_dim=16", "model.backbone.lora_rank=4",
    "model.backbone.lora_alpha=8", "model.expert.num_queries=2", "model.expert.num_heads=2",
    "model.expert.compress_dim=32", "model.expert.hidden_dim=32", "model.expert.step_embed_dim=16",
    "model.action_dim=4", "model.proprio_dim=6", "model.action_horizon=4",
    "train.batch_size=4", "train.lr=2e-3", "train.warmup_steps=1", "train.num_workers=2", "train.log_every=1",
]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, ray_cluster):
    root = tmp_path_factory.mktemp("train")
    write_v3_dataset(root / "data", lengths=(16, 14, 18, 12), cameras=("observation.images.front",))
    # the cache keeps the current frames, so the trained fixture can exercise model.shortcut
    base = [f"workdir={root / 'work'}", f"data.path={root / 'data'}", *TINY, "cache.current_frames=true"]
    cfg = load_config(base)[0]
    assert preprocess(cfg).ok
    return root, base


def cfg_for(workspace, *extra: str):
    return load_config([*workspace[1], f"train.run_name=t-{uuid.uuid4().hex[:8]}", *extra])[0]


def checkpoints(storage: Path) -> list[Path]:
    return sorted(p for p in storage.glob("checkpoint_*") if p.is_dir())


def metric_history(cfg, run_id: str, key: str) -> list[float]:
    tracking.setup(cfg)
    history = mlflow.MlflowClient().get_metric_history(run_id, key)
    return [m.value for m in sorted(history, key=lambda m: (m.step, m.timestamp))]


@pytest.fixture(scope="module")
def trained(workspace):
    cfg = cfg_for(workspace, "train.steps=12", "train.checkpoint_every=6", "train.plot_every=6",
                  "model.shortcut.enabled=true", "model.shortcut.keypoints=4")
    return cfg, train(cfg)


def test_ddp_loss_falls_and_replicas_stay_identical(trained):
    cfg, result = trained
    losses = metric_history(cfg, result.run_id, "action_loss")
    assert len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.8 * sum(losses[:3]) / 3, losses
    spread = metric_history(cfg, result.run_id, "replica_spread")
    assert spread and max(spread) == 0.0  # DDP kept both ranks' parameters bit-identical


def test_mlflow_run_holds_params_metrics_tags_artifacts(trained):
    cfg, result = trained
    run = mlflow.MlflowClient().get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.steps"] == "12" and run.data.params["model.expert.pooling"] == "query"
    for key in ("loss", "video_loss", "action_loss", "lr", "grad_norm", "samples_per_s"):
        assert key in run.data.metrics, key
    assert run.data.tags[FINGERPRINT_TAG] == open_cache_for(cfg).fingerprint
    # the workers really run on the malloc train.allocator=auto picks here (jemalloc where installed)
    assert run.data.tags[MALLOC_TAG] == allocator.resolve(cfg.train.allocator).value
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id)}
    assert {"config.yaml", "normalization_stats.json", "plots", "policy"} <= artifacts
    plots = [a.path for a in mlflow.MlflowClient().list_artifacts(result.run_id, "plots")]
    assert any("actions_step" in p for p in plots) and any("video_latents_step" in p for p in plots)


def test_registered_model_acts_like_the_trained_model(trained):
    cfg, result = trained
    bundle = tracking.resolve_model(f"models:/{cfg.tracking.registered_model}@latest")
    loaded = load_policy(bundle)  # merged LoRA, truncated after the last fused block
    last = checkpoints(Path(cfg.workdir) / "ray_results" / cfg.train.run_name)[-1]
    trained_model = load_checkpoint(last / "model.safetensors").eval()  # what the workers saved, unmerged
    cache = open_cache_for(cfg)
    batch = next(batches(cfg, cache, rank=0, world=1))
    assert batch["current_pixels"].shape == (4, 3, 1, 32, 32)  # the shortcut is part of what is compared
    with torch.no_grad():
        expected = trained_model.predict_actions(batch)
    got = loaded.policy.model.predict_actions(batch)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # the bundle's normalization is the cache's, both ways
    for norm, name in ((loaded.policy.state_norm, "proprio"), (loaded.policy.action_norm, "actions")):
        assert norm.low.tolist() == pytest.approx(cache.stats[name]["min"])
        assert norm.high.tolist() == pytest.approx(cache.stats[name]["max"])


def test_held_out_episodes_give_validation_losses_at_each_checkpoint(workspace):
    cfg = cfg_for(workspace, "train.steps=4", "train.checkpoint_every=2", "train.num_workers=1",
                  "train.heldout_shards=1", "train.val_batches=2")
    result = train(cfg)
    for key in ("val_loss", "val_video_loss", "val_action_loss"):  # the last shard's episodes, never trained on
        assert len(metric_history(cfg, result.run_id, key)) == 2, key  # steps 2 and 4
    with pytest.raises(ValueError, match="train.heldout_shards=4 must leave training shards"):
        train(cfg_for(workspace, "train.heldout_shards=4"))


def test_crashing_run_ends_failed(workspace):
    cfg = cfg_for(workspace, "train.steps=2", "train.max_failures=0", "model.expert.num_heads=3")  # 32 % 3 != 0
    with pytest.raises(Exception):
        train(cfg)
    runs = mlflow.search_runs(filter_string=f"tags.`lightwam.run_name` = '{cfg.train.run_name}'", output_format="list",
                              experiment_ids=[tracking.setup(cfg)])
    assert [r.info.status for r in runs] == ["FAILED"]


def registered_step(storage: Path) -> int | None:
    """Step of the latest checkpoint Ray Train's controller has registered (a directory alone may be in flight)."""
    try:
        snapshot = json.loads((storage / "checkpoint_manager_snapshot.json").read_text())
        return int(snapshot["latest_checkpoint_result"]["metrics"]["step"])
    except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
        return None


def _train_workers() -> list[psutil.Process]:
    """Ray Train workers of this session's test cluster only: its raylet is a child of this process.

    Never every RayTrainWorker on the machine: that would kill a user's own training run.
    """
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if any("RayTrainWorker" in part for part in proc.cmdline()):
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def train_until_a_checkpoint(workspace, ray_cluster, extra: list[str]):
    """Start `pipeline.train` in a subprocess and return once Ray Train has registered a checkpoint."""
    cfg = cfg_for(workspace, *extra)
    args = [*workspace[1], f"train.run_name={cfg.train.run_name}", *extra]
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.train", *args], env=subprocess_env(ray_cluster),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    storage = Path(cfg.workdir) / "ray_results" / cfg.train.run_name
    deadline = time.time() + 240
    while registered_step(storage) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert registered_step(storage) is not None, "no checkpoint was registered"
    return cfg, args, proc, storage


def test_killed_worker_is_replaced_and_the_run_resumes(workspace, ray_cluster):
    # ~70 ms a step: once the first checkpoint (step 10) is registered, ~6 s of training remain for the kill
    extra = ["train.steps=100", "train.checkpoint_every=10", "train.max_failures=2", "train.plot_every=1000"]
    cfg, args, proc, storage = train_until_a_checkpoint(workspace, ray_cluster, extra)
    workers = _train_workers()
    assert workers, "no Ray Train worker process found"
    for worker in workers:  # both ranks: the group must be rebuilt whichever rank held the step
        worker.kill()
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    tracking.setup(cfg)
    run = mlflow.search_runs(filter_string=f"tags.`lightwam.run_name` = '{cfg.train.run_name}'",
                             output_format="list", experiment_ids=[tracking.setup(cfg)])[0]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["step"] == 100
    resumed = metric_history(cfg, run.info.run_id, "resumed_from_step")
    assert resumed and resumed[0] > 0 and resumed[0] % 10 == 0, out  # restarted from a checkpoint, not from scratch


def _fake_checkpoint(d: Path, step: int | None, missing: str | None = None) -> Path:
    d.mkdir(parents=True)
    for name in ("model.safetensors", "optimizer.safetensors"):
        if name != missing:
            (d / name).write_bytes(b"x")
    if missing != "train_state.json":
        (d / "train_state.json").write_text(json.dumps({"step": step}) if step is not None else "")
    return d


def test_resume_takes_the_newest_complete_checkpoint_ray_has_not_recorded(tmp_path):
    """Stopped between writing a checkpoint and recording it, or mid-record: the newest complete one continues."""
    from pipeline.train.resume import SNAPSHOT, checkpoint_to_resume

    run = tmp_path / "run"
    _fake_checkpoint(run / "checkpoint_a", 4)
    best = _fake_checkpoint(run / "checkpoint_b", 6)
    _fake_checkpoint(run / "checkpoint_c", 8, missing="optimizer.safetensors")  # cut short while copied
    _fake_checkpoint(run / "checkpoint_d", None)  # train_state.json empty
    assert checkpoint_to_resume(run) == best  # no record yet: Ray would start over
    record = {"latest_checkpoint_result": {"checkpoint_dir_name": "checkpoint_b", "metrics": {"step": 6}}}
    (run / SNAPSHOT).write_text(json.dumps(record))
    assert checkpoint_to_resume(run) is None  # Ray's record names the newest: Ray resumes from it itself
    record["latest_checkpoint_result"]["metrics"]["step"] = 4
    (run / SNAPSHOT).write_text(json.dumps(record))
    assert checkpoint_to_resume(run) == best  # written after Ray's last record
    (run / SNAPSHOT).write_text("")
    assert checkpoint_to_resume(run) == best
    assert not (run / SNAPSHOT).exists() and list(run.glob(f"{SNAPSHOT}.unreadable-*"))
    assert checkpoint_to_resume(tmp_path / "empty") is None
