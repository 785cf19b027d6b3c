"""diagnostics.future_strip on a tiny random Light-WAM registered in MLflow: a real MetaWorld rollout, the real VAE."""

from __future__ import annotations

import matplotlib.image
import mlflow
import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from serve_bundle import CONFIG, TASK, tiny_bundle

from diagnostics.future_strip import main
from pipeline import tracking
from pipeline.cli import load_config
from pipeline.workdir import workdir


@pytest.fixture
def registered(tmp_path, monkeypatch):
    """(overrides, run id) of version 1 of `light-wam` in a fresh store, its run holding the cache params."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    overrides = [f"workdir={tmp_path / 'work'}", *CONFIG, "eval.num_workers=0", "eval.replan_every=4",
                 "eval.max_steps=30", "pretrain.sample_steps=2"]
    cfg = load_config(overrides)[0]
    with mlflow.start_run(experiment_id=tracking.setup(cfg)) as run:
        mlflow.log_artifacts(str(tiny_bundle(tmp_path / "bundle")), "policy")
        mlflow.log_params({"cache.num_frames": cfg.cache.num_frames, "cache.frame_stride": cfg.cache.frame_stride,
                           "cache.latent_downsample": cfg.cache.latent_downsample})
    assert str(tracking.register_checkpoint(cfg, run.info.run_id, "policy")) == "1"
    return overrides, cfg, run.info.run_id


def test_strip_predicts_the_cache_clip_and_lands_in_the_run(registered, capsys):
    overrides, cfg, run_id = registered
    path, strips = main([*overrides, "model=models:/light-wam/1", f"tasks={TASK}", "episodes=1"])

    (strip,) = strips
    ds = cfg.cache.latent_downsample  # two 32x32 cameras side by side -> 4x8 latents -> pooled
    clip = (1, cfg.cache.vae.z_dim, 1 + (cfg.cache.num_frames - 1) // 4, 32 // 8 // ds, 64 // 8 // ds)
    assert tuple(strip.real.shape) == clip and tuple(strip.predicted.shape) == clip
    assert torch.equal(strip.predicted[:, :, :1], strip.current), "frame 0 is the given current latent"
    # the live first frame, encoded as the policy encodes it, is frame 0 of the clip encoded as the cache encodes it
    torch.testing.assert_close(strip.real[:, :, :1], strip.current, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(strip.real[:, :, 1], strip.real[:, :, 0]), "the rollout moved the robot"
    assert torch.isfinite(strip.predicted).all() and not torch.allclose(strip.predicted[:, :, 1], strip.current[:, :, 0])

    assert path == workdir(cfg) / "pictures" / "future_strip_light-wam-v1.png"
    assert str(path) in capsys.readouterr().out
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 200 and len(np.unique(image.reshape(-1, image.shape[-1]), axis=0)) > 100
    assert [a.path for a in MlflowClient().list_artifacts(run_id, "pictures")] == [f"pictures/{path.name}"]


def test_a_config_cutting_other_clips_than_the_run_is_refused(registered, capsys):
    overrides, _, _ = registered
    with pytest.raises(SystemExit) as exit_:
        main([*overrides, "model=models:/light-wam/1", "cache.frame_stride=3"])
    assert exit_.value.code == 1 and "cache.frame_stride=2 (config: 3)" in capsys.readouterr().out
