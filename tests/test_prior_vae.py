"""`python -m pipeline.prior.fit_vae`: fit, register, and load back through the cache's VAE path by `models:/` URI."""

from __future__ import annotations

from pathlib import Path

import torch
from mlflow import MlflowClient
from tiny import CACHE, DEMO

from model.vae import build_vae, encode
from model.vae_fit import frames_to_clips
from pipeline.cli import parse_or_exit
from pipeline.pretrained import resolve_config_paths
from pipeline.prior.fit_vae import fit

FIT = ["vae_fit.fit.steps=40", "vae_fit.fit.batch_size=4", "vae_fit.fit.lr=3e-3", "vae_fit.max_frames=200"]


def test_fitted_vae_is_registered_and_loads_through_the_cache_path(tmp_path: Path):
    cfg = parse_or_exit([f"workdir={tmp_path}", *DEMO, *CACHE, *FIT])
    fitted = fit(cfg)
    assert fitted.uri == "models:/wan-vae/1" and fitted.vae is not None
    run = MlflowClient().get_run(MlflowClient().get_model_version("wan-vae", "1").run_id)
    assert "vae_loss" in run.data.metrics and run.data.metrics["heldout_l1"] < 1.0
    artifacts = [a.path for a in MlflowClient().list_artifacts(run.info.run_id)]
    assert "vae_reconstructions.png" in artifacts and "wan" in artifacts

    # the cache's VAE path: a models:/ URI resolved to a local diffusers dir, then from_pretrained
    users = parse_or_exit([f"workdir={tmp_path}", *DEMO, *CACHE, "cache.vae.pretrained_path=models:/wan-vae@latest"])
    assert resolve_config_paths(users) == {"cache.vae.pretrained_path": "models:/wan-vae@latest"}
    local = Path(users.cache.vae.pretrained_path)
    assert (local / "vae" / "config.json").exists() and local.parent == tmp_path / "pretrained"
    loaded = build_vae(users.cache.vae)
    clips = frames_to_clips(fitted.frames)
    latents = encode(loaded, clips)
    assert torch.equal(latents, encode(fitted.vae, clips))
    per_channel = latents.transpose(0, 1).flatten(1)  # the stored stats normalise the dataset's latents
    assert per_channel.mean(1).abs().max() < 0.1
    assert (per_channel.std(1) - 1).abs().max() < 0.1

    # resolved again: the same directory, nothing downloaded twice; the same fit again: skipped
    again = parse_or_exit([f"workdir={tmp_path}", *DEMO, *CACHE, "cache.vae.pretrained_path=models:/wan-vae/1"])
    resolve_config_paths(again)
    assert again.cache.vae.pretrained_path == str(local)
    assert len([p for p in (tmp_path / "pretrained").iterdir() if not p.name.startswith((".", "index"))]) == 1
    repeat = fit(cfg)
    assert repeat.uri == "models:/wan-vae/1" and repeat.vae is None
