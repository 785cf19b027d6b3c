"""A tiny policy bundle registered in a real MLflow store evaluates end to end via the CLI."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from safetensors.torch import save_file

from model.checkpoint import save_checkpoint
from model.light_wam import build_model
from model.vae import build_vae, vae_identity
from pipeline import tracking
from pipeline.cli import load_config
from pipeline.config import Config
from pipeline.evaluate import evaluate_model, main
from pipeline.presets import demo
from pipeline.workdir import demo_dataset_dir
from sim.demos import generate
from sim.metaworld_env import MetaWorldEnv, instruction_for
from stages.lerobot import LeRobotDataset

TASK = "reach-v3"
IMAGE = 32  # per camera: small, so the random VAE and DiT run fast


def tiny_bundle(out: Path, seed: int) -> Path:
    """What pipeline.train registers, for an untrained tiny model: weights, policy.json, text.safetensors."""
    cfg = demo()
    model_cfg = cfg.model
    model_cfg.backbone = dataclasses.replace(model_cfg.backbone, num_layers=2, adapter_layers=[0, 1], ffn_dim=64,
                                             text_dim=32, seed=seed)
    model_cfg.expert = dataclasses.replace(model_cfg.expert, compress_dim=32, hidden_dim=32, step_embed_dim=16)
    model_cfg.action_horizon = 8
    out.mkdir(parents=True)
    save_checkpoint(build_model(model_cfg), out / "model.safetensors")
    vae_cfg = dataclasses.replace(cfg.cache.vae, base_dim=8, dim_mult=[1, 1, 1, 1])
    tasks = [instruction_for(TASK)]
    g = torch.Generator().manual_seed(seed)
    save_file({"0.embedding": torch.randn(4, 32, generator=g), "0.mask": torch.ones(4, dtype=torch.bool)},
              str(out / "text.safetensors"))
    limits = {"min": [-1.0] * 4, "max": [1.0] * 4}
    meta = {"info": {"cameras": [f"observation.images.{c}" for c in cfg.demo.cameras], "image_height": IMAGE,
                     "image_width": IMAGE, "action_horizon": 8, "tasks": tasks, "cache_fingerprint": "test"},
            "stats": {"proprio": limits, "actions": limits}, "vae": asdict(vae_cfg),
            "vae_weights_sha256": vae_identity(build_vae(vae_cfg))["weights_sha256"]}
    (out / "policy.json").write_text(json.dumps(meta))
    return out


def register(cfg: Config, bundle: Path) -> str:
    experiment = tracking.setup(cfg)
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(bundle), "policy")
    return str(tracking.register_checkpoint(cfg, run.info.run_id, "policy"))


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "work"


def overrides(workdir: Path, *extra: str) -> list[str]:
    return [f"workdir={workdir}", f"eval.tasks=[{TASK}]", "eval.episodes_per_task=2", "eval.max_steps=12",
            "eval.replan_every=6", "eval.num_workers=0", "eval.videos_per_task=1", *extra]


def test_registered_bundle_evaluates_and_lands_in_mlflow(workdir, tmp_path, capsys):
    cfg, _ = load_config(overrides(workdir))
    version = register(cfg, tiny_bundle(tmp_path / "bundle", seed=0))

    main(overrides(workdir, "model=models:/light-wam@latest"))

    client = MlflowClient()
    mv = client.get_model_version("light-wam", version)
    metrics = client.get_run(mv.run_id).data.metrics
    assert metrics["eval/success_mean"] == 0.0  # an untrained policy does not reach the goal in 12 steps
    assert f"eval/success/{TASK}" in metrics and "eval/suite_ci_high/metaworld" in metrics
    assert str(client.get_model_version_by_alias("light-wam", "champion").version) == version  # no champion yet: crowned
    artifacts = [a.path for a in client.list_artifacts(mv.run_id, "eval")]
    assert "eval/results.json" in artifacts and "eval/videos" in artifacts
    assert len(client.list_artifacts(mv.run_id, "eval/videos")) == 1
    results = json.loads((workdir / "eval" / f"light-wam-v{version}" / "results.json").read_text())
    assert results["version"] == version and [e["steps"] for e in results["per_episode"]] == [12, 12]
    assert "closed-loop evaluation" in capsys.readouterr().out

    # a second version that does no better leaves the champion where it is
    second = register(cfg, tiny_bundle(tmp_path / "bundle2", seed=1))
    cfg2, _ = load_config(overrides(workdir, f"eval.model=models:/light-wam/{second}"))
    report = evaluate_model(cfg2, show_progress=False)
    assert report["previous_champion"] == version and report["champion"] is False
    assert str(client.get_model_version_by_alias("light-wam", "champion").version) == version


def test_plain_bundle_path_writes_json_only(workdir, tmp_path):
    bundle = tiny_bundle(tmp_path / "plain", seed=0)
    cfg, _ = load_config(overrides(workdir, f"eval.model={bundle}", "eval.episodes_per_task=1"))
    report = evaluate_model(cfg, show_progress=False)
    assert report["run_id"] is None and report["champion"] is False
    assert (workdir / "eval" / "plain" / "results.json").exists()


def test_unknown_task_is_refused_by_name(workdir, tmp_path):
    bundle = tiny_bundle(tmp_path / "b", seed=0)
    cfg, _ = load_config(overrides(workdir, f"eval.model={bundle}", "eval.tasks=[drawer-close-v3]"))
    with pytest.raises(ValueError, match="not trained on .*close the drawer"):
        evaluate_model(cfg, show_progress=False)


def test_demo_layouts_replay_the_training_layouts_outside_the_score(workdir, tmp_path):
    """eval.layouts=demo resets on the demonstrations' layouts, logs under eval_demo/ and never crowns."""
    demo = ["demo.tasks=[reach-v3]", "demo.cameras=[corner,gripperPOV]", "demo.episodes_per_task=2",
            "demo.max_steps=45", f"demo.width={IMAGE}", f"demo.height={IMAGE}", "demo.workers=1"]
    cfg, _ = load_config(overrides(workdir, *demo))
    report = generate(cfg.demo, demo_dataset_dir(cfg), show_progress=False)
    assert report.attempts > report.episodes, "precondition: a failed attempt, so kept layouts are not attempts 0..n"
    version = register(cfg, tiny_bundle(tmp_path / "bundle", seed=0))

    main(overrides(workdir, *demo, "model=models:/light-wam@latest", "eval.layouts=demo"))

    dataset = LeRobotDataset(demo_dataset_dir(cfg))
    episodes = pq.read_table(demo_dataset_dir(cfg) / "meta/episodes/chunk-000/file-000.parquet").to_pandas()
    results = json.loads((workdir / "eval" / f"light-wam-v{version}-demo-layouts" / "results.json").read_text())
    assert results["layouts"] == "demo"
    assert [e["seed"] for e in results["per_episode"]] == episodes["layout_seed"].tolist()
    with MetaWorldEnv(TASK, ["corner"], IMAGE, IMAGE, 5) as env:
        for episode, seed in zip(dataset.episodes, episodes["layout_seed"]):
            start = env.reset(int(seed))["state"]
            assert np.array_equal(start, dataset.frames(episode).state[0]), "the seed resets to the demo's layout"
    client = MlflowClient()
    metrics = client.get_run(client.get_model_version("light-wam", version).run_id).data.metrics
    assert "eval_demo/success_mean" in metrics and "eval/success_mean" not in metrics
    with pytest.raises(MlflowException):
        client.get_model_version_by_alias("light-wam", "champion")

    too_many, _ = load_config(overrides(workdir, *demo, "eval.model=models:/light-wam@latest", "eval.layouts=demo",
                                        "eval.episodes_per_task=3"))
    with pytest.raises(ValueError, match="reach-v3: the demo dataset has 2 layouts"):
        evaluate_model(too_many, show_progress=False)
