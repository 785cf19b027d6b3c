"""`python -m pipeline.run` as a user runs it: stopped mid-training, then the same command again.

No RAY_ADDRESS: the run starts its own embedded cluster, which is the point (what
a run starts, it must stop). Ablations on shared shards and `pipeline.compare`
are proven under `ray job submit` (tests/test_jobs.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
from mlflow import MlflowClient
from tiny import run_args

from pipeline.train.resume import newest_complete_checkpoint

REPO = Path(__file__).resolve().parent.parent
RUN_NAME_TAG = "lightwam.run_name"


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


def alive(procs: list[psutil.Process], grace: float = 15.0) -> list[psutil.Process]:
    """The processes still running after `grace` seconds (a zombie has exited: it only awaits reaping)."""
    deadline = time.time() + grace
    while True:
        left = []
        for proc in procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    left.append(proc)
            except psutil.NoSuchProcess:
                pass
        if not left or time.time() > deadline:
            return left
        time.sleep(0.5)


def naming(text: str) -> list[psutil.Process]:
    return [p for p in psutil.process_iter(["cmdline"]) if any(text in part for part in p.info["cmdline"] or [])]


def test_interrupted_run_stops_its_cluster_and_resumes(tmp_path):
    """Stopped at any moment after a checkpoint, Ray's record of it written, unwritten or cut mid-write."""
    work = tmp_path / "work"
    name = f"interrupted-{uuid.uuid4().hex[:8]}"
    args = run_args(work, f"train.run_name={name}", "train.steps=12", "train.checkpoint_every=2")
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.run", *args], env=pipeline_env(), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        storage = work / "ray_results" / name
        deadline = time.time() + 600
        # stopped once a checkpoint is written in full (not while it is being copied)
        while not newest_complete_checkpoint(storage) and proc.poll() is None and time.time() < deadline:
            time.sleep(0.5)
        assert newest_complete_checkpoint(storage) and proc.poll() is None, "no checkpoint while the run was training"
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
    record = storage / "checkpoint_manager_snapshot.json"
    if record.exists():
        record.write_text("")  # what a stop during Ray's in-place write leaves

    # the same command again continues: cache reused, training resumed from the checkpoint, run finished
    out = run_pipeline("pipeline.run", *args).stdout
    assert "cache reused: built" in out and "continuing run" in out
    run = run_named(work, name)
    assert run.info.status == "FINISHED" and run.data.metrics["step"] == 12
    resumed = [m.value for m in mlflow_client(work).get_metric_history(run.info.run_id, "resumed_from_step")]
    assert resumed and resumed[0] > 0 and resumed[0] % 2 == 0
