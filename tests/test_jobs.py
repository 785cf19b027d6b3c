"""The README's `ray job submit` recipe, run literally: a loopback head with explicit ports, two jobs, one server.

`python -m cluster.local_head start` (every port given, its own temp dir), two
`ray job submit --working-dir . -- python -m pipeline.run` jobs with the tiny
config and the default relative workdir, the second an ablation that keeps the
cache, then `python -m cluster.local_head stop`. The jobs must share one cache
outside Ray's temporary copy, leave its files untouched the second time, log two
runs of one experiment to the server, and `pipeline.compare` must rank them.
"""

from __future__ import annotations

import hashlib
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
from loopback_cluster import REPO, VENV_BIN, base_env, free_port
from mlflow import MlflowClient
from mlflow.models import Model
from tiny import RUN

from cluster.local_head import port_free

HEAD_PORTS = ["gcs", "dashboard", "dashboard-agent-listen", "dashboard-agent-grpc", "metrics-export",
              "runtime-env-agent", "node-manager", "object-manager", "ray-client-server", "mlflow"]
FAST = ["train.steps=2", "train.checkpoint_every=2"]


def free_port_range(size: int) -> range:
    """`size` consecutive free ports below the kernel's ephemeral range (where `free_port` draws from)."""
    for _ in range(50):
        start = random.randrange(20000, 30000)
        ports = range(start, start + size)
        if all(port_free(p) for p in ports):
            return ports
    raise RuntimeError("no free port range for Ray's workers")


def cache_files(cache_root: Path) -> dict[str, tuple[int, str]]:
    """Every file of the cache with its mtime and sha256: any rewrite changes this."""
    return {str(p.relative_to(cache_root)): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(cache_root.rglob("*")) if p.is_file()}


def compare_table(mlflow_port: int) -> str:
    env = {**base_env(), "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}", "COLUMNS": "200"}
    out = subprocess.run([sys.executable, "-m", "pipeline.compare"], env=env, cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def local_head(command: str, temp: Path, *args: str) -> str:
    out = subprocess.run([sys.executable, "-m", "cluster.local_head", command, "--temp-dir", str(temp), *args],
                         env=base_env(), cwd=REPO, capture_output=True, text=True, timeout=400)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


def submit(dashboard: int, *overrides: str) -> str:
    cmd = [str(VENV_BIN / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dashboard}",
           "--working-dir", ".", "--", "python", "-m", "pipeline.run", *RUN, *FAST, *overrides]
    out = subprocess.run(cmd, env=base_env(), cwd=REPO, capture_output=True, text=True, timeout=900)
    log = out.stdout + out.stderr
    assert out.returncode == 0 and "succeeded" in log, log[-5000:]
    return log


def test_two_submitted_jobs_share_one_cache_and_one_mlflow_experiment(tmp_path):
    temp = Path(tempfile.mkdtemp(prefix="lw-head-", dir="/tmp"))  # short: Ray's unix sockets live under it
    home = tmp_path / "home"
    ports = {name: free_port() for name in HEAD_PORTS}
    workers = free_port_range(60)
    flags = [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]
    flags += ["--min-worker-port", str(workers.start), "--max-worker-port", str(workers.stop - 1)]
    try:
        started = local_head("start", temp, "--home", str(home), "--num-cpus", "2", *flags)
        assert f"http://127.0.0.1:{ports['dashboard']}" in started and "answers" in local_head("status", temp)

        first = submit(ports["dashboard"])
        before = cache_files(home / "work" / "cache")
        second = submit(ports["dashboard"], "model.expert.pooling=mean")
        for log in (first, second):
            assert "Traceback" not in log and "Exception ignored" not in log, log[-5000:]
        assert "cache reused: built" in second

        # one cache, in the stable home the head gave its jobs, not in Ray's temporary copy of the repository
        caches = [p for p in (home / "work" / "cache").iterdir() if p.is_dir()]
        assert len(caches) == 1, caches
        assert cache_files(home / "work" / "cache") == before  # no shard, sidecar or manifest rewritten
        packages = [p for p in temp.glob("session_*/runtime_resources/working_dir_files/_ray_pkg_*") if p.is_dir()]
        assert packages and (packages[0] / "pipeline" / "run.py").is_file()
        for package in packages:  # uploaded without what .gitignore names, and nothing written into it
            for absent in (".venv", ".git", "light_wam.egg-info", "work"):
                assert not (package / absent).exists(), package / absent

        # both runs on the MLflow server the head started, in one experiment, on the same cache
        client = MlflowClient(f"http://127.0.0.1:{ports['mlflow']}")
        experiment = client.get_experiment_by_name("light-wam")
        runs = client.search_runs([experiment.experiment_id])
        assert sorted(r.data.params["model.expert.pooling"] for r in runs) == ["mean", "query"]
        assert {r.info.status for r in runs} == {"FINISHED"}
        assert {r.data.tags["lightwam.cache_fingerprint"] for r in runs} == {caches[0].name}
        assert (home / "mlflow-server" / "mlflow.db").is_file()

        # the UI opens the experiment on its training runs; each version says what it is and how it did
        assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
        for run in runs:
            version = client.search_model_versions(f"run_id = '{run.info.run_id}'")[0]
            assert f"cache {caches[0].name}" in version.description and "Closed-loop success" in version.description
            assert version.tags["cache_fingerprint"] == caches[0].name and "eval_success_mean" in version.tags
            mlmodel = Model.load(client.download_artifacts(run.info.run_id, "policy/MLmodel", str(tmp_path)))
            assert mlmodel.signature.outputs.input_names() == ["actions"]

        # the compare table ranks both runs and shows the one key that differs
        table = compare_table(ports["mlflow"])
        rows = {cells[2]: cells for line in table.splitlines()
                if len(cells := [c.strip() for c in line.split("│")]) > 4 and cells[2].startswith("demo-")}
        names = {r.info.run_id: r.data.tags["lightwam.run_name"] for r in runs}
        assert "model.expert.pooling" in table and set(rows) == set(names.values()), table
        assert {rows[names[r.info.run_id]][4] for r in runs} == {"query", "mean"}
        best = max(runs, key=lambda r: (r.data.metrics.get("eval/success_mean", -1), -r.data.metrics["action_loss"]))
        assert [name for name, cells in rows.items() if cells[1] == "*"] == [names[best.info.run_id]]
        # a job's log reads as lines: nothing wrapped, no Ray connection chatter
        assert "models:/light-wam/1 (also models:/light-wam@latest)" in first
        assert "Connecting to existing Ray cluster" not in first
    finally:
        stopped = subprocess.run([sys.executable, "-m", "cluster.local_head", "stop", "--temp-dir", str(temp)],
                                 env=base_env(), cwd=REPO, capture_output=True, text=True, timeout=120)
        left = [p for p in psutil.process_iter(["cmdline"]) if any(str(temp) in a for a in p.info["cmdline"] or [])]
        shutil.rmtree(temp, ignore_errors=True)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert not left, "processes of the head outlived `local_head stop`"
