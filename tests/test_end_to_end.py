"""`python -m pipeline.run` as a user runs it: ablations on the same shards, and an interrupted run.

No RAY_ADDRESS: every run starts its own embedded cluster, which is the point of
the interrupt test (what a run starts, it must stop). One tiny first run builds
the demo dataset, the cache and a baseline model; the other tests build on it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
from mlflow import MlflowClient
from tiny import run_args

REPO = Path(__file__).resolve().parent.parent
RUN_NAME_TAG, FINGERPRINT_TAG = "lightwam.run_name", "lightwam.cache_fingerprint"


def pipeline_env() -> dict[str, str]:
    # embedded cluster and the workdir's own MLflow store, as by default
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1", MUJOCO_GL="egl", RAY_TRAIN_HEALTH_CHECK_INTERVAL_S="0.2",
               COLUMNS="200")  # wide enough that compare's table keeps whole names
    return env


def run_pipeline(module: str, *args: str) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", module, *args], env=pipeline_env(), cwd=REPO,
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-5000:] + out.stderr[-5000:]
    return out


def mlflow_client(work: Path) -> MlflowClient:
    return MlflowClient(tracking_uri=f"sqlite:///{work / 'mlflow' / 'mlflow.db'}")


def runs(work: Path) -> list:
    client = mlflow_client(work)
    experiment = client.get_experiment_by_name("light-wam")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


def run_named(work: Path, name: str):
    found = [r for r in runs(work) if r.data.tags.get(RUN_NAME_TAG) == name]
    assert len(found) == 1, [r.data.tags.get(RUN_NAME_TAG) for r in runs(work)]
    return found[0]


def cache_files(work: Path) -> dict[str, tuple[int, str]]:
    """Every file of the cache with its mtime and sha256: any rewrite changes this."""
    return {str(p.relative_to(work)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted((work / "cache").rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """The baseline: demo dataset -> cache -> training -> evaluation, with the default pooling (query)."""
    work = tmp_path_factory.mktemp("e2e") / "work"
    out = run_pipeline("pipeline.run", *run_args(work))
    assert "summary" in out.stdout and "success" in out.stdout
    return work


def test_ablation_reuses_the_shards_and_compare_ranks_the_runs(work):
    before = cache_files(work)
    out = run_pipeline("pipeline.run", *run_args(work, "model.expert.pooling=mean"))
    assert "cache reused: built" in out.stdout
    assert cache_files(work) == before  # no shard, sidecar, text embedding or manifest was rewritten

    baseline, ablation = runs(work)
    assert baseline.data.params["model.expert.pooling"] == "query"
    assert ablation.data.params["model.expert.pooling"] == "mean"
    assert {r.info.status for r in (baseline, ablation)} == {"FINISHED"}
    assert baseline.data.tags[FINGERPRINT_TAG] == ablation.data.tags[FINGERPRINT_TAG]

    table = run_pipeline("pipeline.compare", f"workdir={work}").stdout
    assert "model.expert.pooling" in table  # the one key that differs between the two runs
    rows = {cells[2]: cells for line in table.splitlines()
            if len(cells := [c.strip() for c in line.split("│")]) > 4 and cells[2].startswith("demo-")}
    names = {r.info.run_id: r.data.tags[RUN_NAME_TAG] for r in (baseline, ablation)}
    assert set(rows) == set(names.values())
    assert {rows[names[r.info.run_id]][4] for r in (baseline, ablation)} == {"query", "mean"}
    best = max((baseline, ablation), key=lambda r: (r.data.metrics.get("eval/success_mean", -1),
                                                     -r.data.metrics["action_loss"]))
    assert [name for name, cells in rows.items() if cells[1] == "*"] == [names[best.info.run_id]]


def checkpoints(storage: Path) -> list[Path]:
    return sorted(p for p in storage.glob("checkpoint_*") if p.is_dir())


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    left = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
        except psutil.NoSuchProcess:
            pass
    return left


def naming(text: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if any(text in part for part in p.info["cmdline"] or [])]


def test_interrupted_run_stops_its_cluster_and_resumes(work):
    name = f"interrupted-{uuid.uuid4().hex[:8]}"
    args = run_args(work, f"train.run_name={name}", "train.steps=12", "train.checkpoint_every=2")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.run", *args], env=pipeline_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        storage = work / "ray_results" / name
        deadline = time.time() + 600
        while not checkpoints(storage) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert checkpoints(storage) and proc.poll() is None, "no checkpoint while the run was training"
        started = psutil.Process(proc.pid).children(recursive=True)  # the embedded GCS, raylet, workers...
        assert any(p.name() == "raylet" for p in started)
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "interrupted" in out, out[-3000:]

    # nothing it started outlived it: no process of its tree, none naming its Ray session
    assert not alive(started), [(p.pid, p.name()) for p in alive(started)]
    sessions = [s.name for s in Path("/tmp/ray").glob(f"session_*_{proc.pid}")]  # named after the driver's pid
    assert sessions and not [p for s in sessions for p in alive(naming(s))]
    assert run_named(work, name).info.status in ("KILLED", "FAILED")

    # the same command again continues: cache reused, training resumed from the checkpoint, run finished
    out = run_pipeline("pipeline.run", *args).stdout
    assert "cache reused: built" in out and "continuing run" in out
    run = run_named(work, name)
    assert run.info.status == "FINISHED" and run.data.metrics["step"] == 12
    resumed = [m.value for m in mlflow_client(work).get_metric_history(run.info.run_id, "resumed_from_step")]
    assert resumed and resumed[0] > 0 and resumed[0] % 2 == 0
