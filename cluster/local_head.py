"""A Ray head and an MLflow server on this machine's loopback, for `ray job submit`: start, status, stop.

    python -m cluster.local_head start     # prints the `ray job submit` line to use
    python -m cluster.local_head status
    python -m cluster.local_head stop      # stops only what `start` started, by process id

Every port the head opens is given explicitly (the defaults avoid Ray's own), and
each is checked free before anything starts: a second Ray on the machine holding
Ray's default dashboard-agent port otherwise leaves `ray start` reporting success
while `ray job submit` fails forever with "No available agent". `start` returns
once the job API, the dashboard agent and the MLflow server answer.

The head runs with `$LIGHT_WAM_HOME` (where relative workdirs of jobs resolve) and
`MLFLOW_TRACKING_URI` (this server) in its environment, which every job inherits:
two jobs share one cache and one MLflow experiment. The server keeps its sqlite
store and artifacts under `<home>/mlflow-server`. Token auth is off, acceptable
only because everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
from ray._private import ray_constants

BIN = Path(sys.executable).parent
STATE = "local_head.json"


@dataclass
class HeadPorts:
    """Every port the head and the MLflow server listen on: not Ray's defaults, and below the kernel's
    ephemeral range (32768+), where any outgoing connection may hold a port for a while."""

    gcs: int = 6390
    dashboard: int = 8275
    dashboard_agent_listen: int = 20375
    dashboard_agent_grpc: int = 20376
    metrics_export: int = 20377
    runtime_env_agent: int = 20378
    node_manager: int = 20379
    object_manager: int = 20380
    ray_client_server: int = 20381
    min_worker: int = 20400
    max_worker: int = 20599
    mlflow: int = 5000


def _tool(name: str) -> str:
    return str(BIN / name) if (BIN / name).exists() else name


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _answers(url: str, any_status: bool = False) -> bool:
    """Does `url` answer over HTTP (200, or any status when `any_status`)?"""
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            return reply.status == 200
    except urllib.error.HTTPError:
        return any_status
    except (OSError, ValueError):
        return False


def _state_path(temp_dir: Path) -> Path:
    return temp_dir / STATE


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _ready(ports: HeadPorts) -> dict[str, bool]:
    return {
        "job API": _answers(f"http://127.0.0.1:{ports.dashboard}/api/jobs/"),
        "dashboard agent": _answers(f"http://127.0.0.1:{ports.dashboard_agent_listen}/", any_status=True),
        "MLflow server": _answers(f"http://127.0.0.1:{ports.mlflow}/health"),
    }


def _head_env(home: Path, ports: HeadPorts) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update({
        "RAY_AUTH_MODE": "disabled",  # loopback only: never for a cluster other machines can reach
        ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR: "0",  # Ray keeps 127.0.0.1 instead of the outward address
        "RAY_USAGE_STATS_ENABLED": "0",
        "LIGHT_WAM_HOME": str(home),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{ports.mlflow}",
        "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",  # jobs' `python` is this environment's
    })
    return env


def start(temp_dir: Path, home: Path, ports: HeadPorts, num_cpus: int, timeout: float) -> dict:
    state_file = _state_path(temp_dir)
    if state_file.exists() and any(_alive(p) for p in json.loads(state_file.read_text())["pids"].values()):
        raise SystemExit(f"a head from {state_file} is still running: `python -m cluster.local_head stop` first")
    taken = {name: port for name, port in asdict(ports).items() if not port_free(port)}
    taken.update({f"worker port {p}": p for p in range(ports.min_worker, ports.max_worker + 1) if not port_free(p)})
    if taken:
        raise SystemExit(f"ports already in use on 127.0.0.1: {taken}; pick others (see --help)")
    temp_dir.mkdir(parents=True, exist_ok=True)
    server_dir = home / "mlflow-server"
    (server_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    env = _head_env(home, ports)
    with open(temp_dir / "local_head.log", "w") as log:  # the children keep their own copy of it
        mlflow = subprocess.Popen(
            [_tool("mlflow"), "server", "--backend-store-uri", f"sqlite:///{server_dir / 'mlflow.db'}",
             "--artifacts-destination", str(server_dir / "artifacts"), "--host", "127.0.0.1",
             "--port", str(ports.mlflow), "--workers", "1"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        head = subprocess.Popen(
            [_tool("ray"), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
             f"--port={ports.gcs}", "--dashboard-host=127.0.0.1", f"--dashboard-port={ports.dashboard}",
             f"--dashboard-agent-listen-port={ports.dashboard_agent_listen}",
             f"--dashboard-agent-grpc-port={ports.dashboard_agent_grpc}", f"--metrics-export-port={ports.metrics_export}",
             f"--runtime-env-agent-port={ports.runtime_env_agent}", f"--node-manager-port={ports.node_manager}",
             f"--object-manager-port={ports.object_manager}", f"--ray-client-server-port={ports.ray_client_server}",
             f"--min-worker-port={ports.min_worker}", f"--max-worker-port={ports.max_worker}",
             f"--num-cpus={num_cpus or os.cpu_count()}", "--disable-usage-stats"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    state = {"temp_dir": str(temp_dir), "home": str(home), "ports": asdict(ports),
             "pids": {"ray start": head.pid, "mlflow server": mlflow.pid}}
    state_file.write_text(json.dumps(state, indent=1))
    deadline = time.time() + timeout
    while not all((ready := _ready(ports)).values()):
        exited = [name for name, proc in (("ray start", head), ("mlflow server", mlflow)) if proc.poll() is not None]
        if exited or time.time() > deadline:
            stop(temp_dir)
            tail = (temp_dir / "local_head.log").read_text()[-3000:]
            why = f"{', '.join(exited)} exited" if exited else f"not ready after {timeout:.0f}s: {ready}"
            raise SystemExit(f"local head did not start ({why}); log {temp_dir / 'local_head.log'}:\n{tail}")
        time.sleep(0.5)
    return state


def _owned(state: dict) -> list[psutil.Process]:
    """The processes `start` made: its two children, their descendants, and Ray's processes naming its temp dir."""
    found: dict[int, psutil.Process] = {}
    for pid in state["pids"].values():
        try:
            proc = psutil.Process(pid)
            found.update({p.pid: p for p in [proc, *proc.children(recursive=True)]})
        except psutil.NoSuchProcess:
            pass
    me = psutil.Process()
    callers = {me.pid, *(p.pid for p in me.parents())}  # this command names the temp dir too
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if proc.pid not in callers and any(state["temp_dir"] in part for part in proc.info["cmdline"] or []):
                found[proc.pid] = proc
        except psutil.Error:
            pass
    return list(found.values())


def stop(temp_dir: Path, timeout: float = 45) -> int:
    """SIGTERM what `start` started (`ray start --block` stops its own children), then kill what is left."""
    state_file = _state_path(temp_dir)
    if not state_file.exists():
        print(f"no head recorded in {state_file}: nothing to stop")
        return 0
    state = json.loads(state_file.read_text())
    owned = _owned(state)
    for pid in state["pids"].values():
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    _, alive = psutil.wait_procs(owned, timeout=timeout)
    for proc in alive + _owned(state):
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(_owned(state), timeout=10)
    state_file.unlink()
    return len(owned)


def status(temp_dir: Path) -> bool:
    state_file = _state_path(temp_dir)
    if not state_file.exists():
        print(f"no head recorded in {state_file}")
        return False
    state = json.loads(state_file.read_text())
    for name, pid in state["pids"].items():
        print(f"{name:15s} pid {pid} {'running' if _alive(pid) else 'gone'}")
    ready = _ready(HeadPorts(**state["ports"]))
    for name, ok in ready.items():
        print(f"{name:15s} {'answers' if ok else 'does not answer'}")
    return all(ready.values())


def _usage(state: dict) -> str:
    ports = state["ports"]
    return (f"Ray head   127.0.0.1:{ports['gcs']}, dashboard http://127.0.0.1:{ports['dashboard']}\n"
            f"MLflow     http://127.0.0.1:{ports['mlflow']} (store and artifacts in {state['home']}/mlflow-server)\n"
            f"outputs    relative workdirs of jobs resolve in {state['home']}\n"
            f"submit     ray job submit --address http://127.0.0.1:{ports['dashboard']} --working-dir . "
            f"-- python -m pipeline.run\n"
            f"stop       python -m cluster.local_head stop --temp-dir {state['temp_dir']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m cluster.local_head", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["start", "status", "stop"])
    parser.add_argument("--temp-dir", type=Path, default=Path(f"/tmp/light-wam-ray-{getpass.getuser()}"),
                        help="Ray's session files, this head's log and its pid record (keep the path short)")
    parser.add_argument("--home", type=Path, default=Path(os.environ.get("LIGHT_WAM_HOME", "~/.cache/light-wam")),
                        help="LIGHT_WAM_HOME of the jobs, and where the MLflow server keeps its store")
    parser.add_argument("--num-cpus", type=int, default=0, help="CPUs the head offers (0 = all)")
    parser.add_argument("--timeout", type=float, default=180, help="seconds to wait for readiness")
    for name, default in asdict(HeadPorts()).items():
        parser.add_argument(f"--{name.replace('_', '-')}-port", dest=name, type=int, default=default)
    args = parser.parse_args(argv)
    temp_dir, home = args.temp_dir.expanduser().resolve(), args.home.expanduser().resolve()
    if args.command == "start":
        ports = HeadPorts(**{k: getattr(args, k) for k in asdict(HeadPorts())})
        print(_usage(start(temp_dir, home, ports, args.num_cpus, args.timeout)))
    elif args.command == "stop":
        print(f"stopped {stop(temp_dir)} processes of the head in {temp_dir}")
    else:
        sys.exit(0 if status(temp_dir) else 1)


if __name__ == "__main__":
    main()
