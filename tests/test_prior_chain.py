"""`pipeline.run preset=bench_prior`'s first part (`pipeline.prior.chain.ensure_prior`), whole and tiny.

Corpus -> fitted VAE -> corpus cache -> pretrained DiT, on a real MetaWorld corpus; a second call
reuses every step's result and points the config at the same registered VAE and prior.
"""

from __future__ import annotations

from mlflow import MlflowClient
from tiny import CACHE, DEMO, MODEL

from pipeline.cli import load_config
from pipeline.prior.chain import ensure_prior

CHAIN = ["pretrain.before_run=true", "corpus.tasks=[reach-v3]", "corpus.episodes_per_task=2", "corpus.workers=1",
         "demo.max_steps=60", "vae_fit.fit.steps=2", "vae_fit.fit.frame_steps=2", "vae_fit.fit.batch_size=2",
         "vae_fit.max_frames=64", "model.backbone.freeze=false", "model.backbone.lora_rank=0",
         "train.num_workers=1", "train.batch_size=4", "train.warmup_steps=1", "train.checkpoint_every=2",
         "pretrain.steps=2", "pretrain.val_every=1", "pretrain.val_batches=1", "pretrain.picture_clips=1",
         "pretrain.sample_steps=1", "cache.samples_per_shard=4", "cluster.num_cpus=2"]


def test_chain_registers_vae_and_prior_then_reuses_them(tmp_path, ray_cluster, capsys):
    args = ["preset=bench_prior", f"workdir={tmp_path}", *DEMO, *CACHE, *MODEL, *CHAIN]
    cfg = load_config(args)[0]
    vae_uri, prior_uri = ensure_prior(cfg)
    assert (vae_uri, prior_uri) == ("models:/wan-vae/1", "models:/wan-prior/1")
    assert (cfg.cache.vae.pretrained_path, cfg.model.backbone.pretrained_path) == (vae_uri, prior_uri)
    client = MlflowClient()
    prior_run = client.get_run(client.get_model_version("wan-prior", "1").run_id)
    assert "val_video_loss" in prior_run.data.metrics

    again = load_config(args)[0]
    capsys.readouterr()
    assert ensure_prior(again) == (vae_uri, prior_uri)
    out = capsys.readouterr().out
    assert "is complete: skipped" in out and "already fitted and registered" in out
    assert [v.version for v in client.search_model_versions("name='wan-prior'")] == [1]
