"""`python -m pipeline.prior.pretrain`: the Wan DiT pretrained on a cache's video, registered, loaded frozen by Light-WAM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pyarrow.parquet as pq
import pytest
import torch
from conftest import subprocess_env
from lerobot_fixtures import write_v3_dataset
from safetensors.torch import load_file
from test_train import TINY, metric_history, registered_step

from model.backbone import VIDEO_HEAD
from model.light_wam import build_model
from pipeline import tracking
from pipeline.cli import load_config
from pipeline.preprocess import open_cache_for, preprocess
from pipeline.pretrained import resolve_config_paths
from pipeline.prior.pretrain import RUN_TAG, pretrain
from pipeline.train import train
from pipeline.train.data import batches
from pipeline.train.state import make_optimizer
from pipeline.train.step import accumulate_gradients
from stages.action_free import ActionFreeCacheError, has_actions

PRETRAIN = ["model.backbone.freeze=false", "model.backbone.lora_rank=0", "train.num_workers=2", "train.lr=3e-3",
            "train.warmup_steps=2", "train.log_every=5", "pretrain.steps=30", "pretrain.val_every=10",
            "pretrain.val_batches=2", "pretrain.picture_clips=2", "pretrain.sample_steps=2",
            "train.checkpoint_every=10"]


def drop_actions(root: Path) -> None:
    """Make a LeRobot v3 dataset action-free, as a user's unlabelled recordings are: no `action` feature."""
    info = json.loads((root / "meta/info.json").read_text())
    del info["features"]["action"]
    (root / "meta/info.json").write_text(json.dumps(info))
    for path in (root / "data").rglob("*.parquet"):
        table = pq.read_table(path)
        pq.write_table(table.drop_columns(["action"]), path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, ray_cluster):
    """An action-free corpus (cached for pretraining) and a small labelled dataset, in one workdir."""
    root = tmp_path_factory.mktemp("prior")
    write_v3_dataset(root / "corpus", lengths=(16, 14, 18, 12, 15), cameras=("observation.images.front",))
    drop_actions(root / "corpus")
    write_v3_dataset(root / "demos", lengths=(16, 14), cameras=("observation.images.front",))
    base = [f"workdir={root / 'work'}", f"data.path={root / 'corpus'}", *TINY]
    demos = [f"workdir={root / 'work'}", f"data.path={root / 'demos'}", *TINY]
    assert preprocess(load_config(base)[0]).ok
    assert preprocess(load_config(demos)[0]).ok
    return root, base, demos


def test_an_action_free_cache_refuses_action_training_by_name(corpus):
    cfg = load_config([*corpus[1], "train.steps=1", "train.run_name=refused"])[0]
    cache = open_cache_for(cfg)
    assert not has_actions(cache.manifest)
    with pytest.raises(ActionFreeCacheError, match=f"{cache.cache_dir}.*has no actions.*'action' feature"):
        train(cfg, cache)


def test_pretraining_lowers_the_validation_loss_and_registers_the_prior(corpus):
    cfg = load_config([*corpus[1], *PRETRAIN])[0]
    uri = pretrain(cfg)
    assert uri == "models:/wan-prior/1"
    client = mlflow.MlflowClient()
    run_id = client.get_model_version("wan-prior", "1").run_id
    val = metric_history(cfg, run_id, "val_video_loss")
    assert len(val) == 4 and val[-1] < val[0], val
    assert any(a.path.startswith("pictures/") for a in client.list_artifacts(run_id, "pictures"))
    assert pretrain(load_config([*corpus[1], *PRETRAIN])[0]) == uri  # finished: skipped, no new version

    # Light-WAM in the paper's recipe on models:/wan-prior@latest: the frozen DiT is exactly the registered one
    lw = load_config([*corpus[2], "model.backbone.pretrained_path=models:/wan-prior@latest",
                      "model.backbone.freeze=true"])[0]
    resolve_config_paths(lw)
    registered = load_file(str(Path(lw.model.backbone.pretrained_path) / "transformer"
                               / "diffusion_pytorch_model.safetensors"))
    model = build_model(lw.model)
    dit = dict(model.backbone.dit.named_parameters())
    frozen = {n: p for n, p in dit.items() if not p.requires_grad}
    assert {n for n in dit if "lora_" not in n and not n.startswith(VIDEO_HEAD)} == set(frozen)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    for name, p in frozen.items():
        assert torch.equal(p, registered[name.replace(".base_layer", "")]), name
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, lw.train)
    data = batches(lw, open_cache_for(lw), 0, 1)
    for _ in range(3):
        accumulate_gradients(model, [next(data)], lw.model, True, torch.device("cpu"))
        opt.step()
        opt.zero_grad()
    for name, p in frozen.items():
        assert torch.equal(p, registered[name.replace(".base_layer", "")]), name
    changed = {n for n, p in model.named_parameters() if p.requires_grad and not torch.equal(p, before[n])}
    assert any("lora_" in n for n in changed) and any(n.startswith("backbone.adapters") for n in changed)
    assert any(n.startswith("expert.") for n in changed)


def test_killed_pretraining_resumes_from_its_checkpoint(corpus, ray_cluster):
    args = [*corpus[1], *PRETRAIN, "pretrain.steps=80", "pretrain.val_every=1000", "pretrain.picture_clips=0",
            "pretrain.run_name=prior-killed"]
    storage = Path(load_config(args)[0].workdir) / "ray_results" / "prior-killed"
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.prior.pretrain", *args], env=subprocess_env(ray_cluster),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 240
    while registered_step(storage) is None and time.time() < deadline and proc.poll() is None:
        time.sleep(0.1)
    assert registered_step(storage) is not None, "no checkpoint was registered"
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode != 0, out  # stopped before the end

    cfg = load_config(args)[0]
    assert pretrain(cfg).startswith("models:/wan-prior/")  # the same command, in-process on the same cluster
    run = mlflow.search_runs(filter_string=f"tags.`{RUN_TAG}` = 'prior-killed'", output_format="list",
                             experiment_ids=[tracking.setup(cfg)])[0]
    assert run.info.status == "FINISHED" and run.data.metrics["step"] == 80
    resumed = metric_history(cfg, run.info.run_id, "resumed_from_step")
    assert resumed and resumed[0] > 0 and resumed[0] % 10 == 0, resumed
