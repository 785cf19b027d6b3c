"""Screenshots of the MLflow UI as a user sees it: runs table, one run's charts, the compare view, a model version.

    python -m benchmarks.mlflow_screenshots --tracking-uri http://127.0.0.1:5000 --out shots/
    python -m benchmarks.mlflow_screenshots --tracking-uri sqlite:///work/mlflow/mlflow.db --out shots/
    python -m benchmarks.mlflow_screenshots --tracking-uri sqlite:///work/mlflow/mlflow.db \
        --filter "tags.lightwam.claim_arm LIKE '%'" --runs 6   # the claim's arms side by side

With a sqlite store it starts `mlflow ui` on a free 127.0.0.1 port for the
duration (stopped by its process id). Needs a headless Chromium on PATH
(Debian: `apt-get install chromium`). Prints the PNG paths.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from mlflow import MlflowClient

from pipeline.model_card import UI_TRAINING_MODE


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(base: str, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1)
    raise RuntimeError(f"MLflow UI at {base} did not answer within {timeout:.0f}s")


@contextmanager
def mlflow_ui(tracking_uri: str):
    """The base URL of a UI for `tracking_uri`: the server itself, or an `mlflow ui` started for a sqlite store."""
    if tracking_uri.startswith("http"):
        yield tracking_uri.rstrip("/")
        return
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    ui = subprocess.Popen([str(mlflow_bin), "ui", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1",
                           "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                          start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_healthy(base)
        yield base
    finally:
        ui.terminate()
        ui.wait(timeout=30)


def screenshot(chromium: str, url: str, out: Path, size: str = "1600,1400", wait_ms: int = 60000) -> Path:
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        f"--user-data-dir={profile}", f"--window-size={size}", f"--virtual-time-budget={wait_ms}",
                        f"--screenshot={out}", url], check=True, capture_output=True, timeout=180)
    return out


def pages(client: MlflowClient, base: str, experiment: str, model: str, filter_string: str = "",
          max_runs: int = 5) -> dict[str, str]:
    """The URLs worth a look, for the experiment's newest runs (those `filter_string` selects)."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise SystemExit(f"no experiment named {experiment!r} at {client.tracking_uri}")
    runs = client.search_runs([exp.experiment_id], filter_string, order_by=["attributes.start_time DESC"],
                              max_results=max_runs)
    if not runs:
        raise SystemExit(f"experiment {experiment!r} has no runs" + (f" matching {filter_string}" if filter_string else ""))
    eid, ids = exp.experiment_id, [r.info.run_id for r in runs]
    urls = {
        "runs_table": f"{base}/#/experiments/{eid}/runs?{UI_TRAINING_MODE}"
                      + (f"&searchFilter={urllib.parse.quote(filter_string)}" if filter_string else ""),
        "run_charts": f"{base}/#/experiments/{eid}/runs/{ids[0]}/model-metrics?{UI_TRAINING_MODE}",
        "compare": f"{base}/#/compare-runs?runs={urllib.parse.quote(json.dumps(ids))}"
                   f"&experiments={urllib.parse.quote(json.dumps([eid]))}&{UI_TRAINING_MODE}",
    }
    versions = client.search_model_versions(f"name = '{model}'")
    if versions:
        newest = max(int(v.version) for v in versions)
        urls["model_version"] = f"{base}/#/models/{model}/versions/{newest}?{UI_TRAINING_MODE}"
    return urls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tracking-uri", required=True, help="http://host:port of a server, or sqlite:///path")
    parser.add_argument("--experiment", default="light-wam")
    parser.add_argument("--model", default="light-wam", help="registered model name")
    parser.add_argument("--out", type=Path, default=Path("mlflow-screenshots"))
    parser.add_argument("--filter", default="", help="MLflow search filter for the runs shown, e.g. tags.KEY = 'V'")
    parser.add_argument("--runs", type=int, default=5, help="newest runs to compare")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if chromium is None:
        raise SystemExit("no headless Chromium on PATH (Debian: apt-get install chromium)")
    args.out.mkdir(parents=True, exist_ok=True)
    with mlflow_ui(args.tracking_uri) as base:
        for name, url in pages(MlflowClient(args.tracking_uri), base, args.experiment, args.model,
                               args.filter, args.runs).items():
            print(screenshot(chromium, url, (args.out / f"{name}.png").resolve()), url)


if __name__ == "__main__":
    main()
