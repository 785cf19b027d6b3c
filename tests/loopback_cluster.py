"""A real multi-node Ray cluster on this machine's loopback, started with `ray start` as users do.

A head and a worker node, each with 1 CPU, its own temp dir, free ports and a
custom resource naming it (`node_a`, `node_b`), every address 127.0.0.1. Token
auth is off, which is acceptable only because nothing listens beyond loopback.
Each node runs `ray start --block` as a child of the test, so stopping it stops
exactly what it started (never `ray stop`, which would stop other clusters too).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from ray._private import ray_constants

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
# Ray's "no multi-node clusters" switch: on, it keeps 127.0.0.1 (see cluster.ray_session._keep_loopback)
NO_MULTINODE = ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR

LIST_NODES = """
import json, ray
from cluster.ray_session import _keep_loopback
_keep_loopback()
ray.init(address="{address}", log_to_driver=False)
print(json.dumps([n for n in ray.nodes() if n["Alive"]]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(**extra: str) -> dict[str, str]:
    """Environment of every node and client: loopback only, auth off, the venv's `python` first on PATH."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", NO_MULTINODE)}
    env.update(RAY_AUTH_MODE="disabled", HF_HUB_OFFLINE="1", MUJOCO_GL="egl", PYTHONPATH=str(REPO),
               PATH=f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}", RAY_USAGE_STATS_ENABLED="0",
               RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S="0",  # a test node has nothing to drain: stop at once
               **extra)
    return env


@dataclass
class LoopbackCluster:
    root: Path
    port: int = field(default_factory=free_port)
    dashboard_port: int = field(default_factory=free_port)
    processes: list[subprocess.Popen] = field(default_factory=list)
    node_ids: dict[str, str] = field(default_factory=dict)  # custom resource name -> Ray node id

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start_node(self, name: str, program: list[str], extra: list[str], env: dict[str, str]) -> None:
        temp = self.root / name
        temp.mkdir(parents=True, exist_ok=True)
        argv = [*program, "start", "--block", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                f"--resources={json.dumps({name: 1})}", f"--temp-dir={temp}",
                f"--dashboard-agent-listen-port={free_port()}", "--object-store-memory=256000000",
                "--disable-usage-stats", *extra]
        with open(temp / "ray-start.log", "w") as log:
            self.processes.append(subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT))

    def start(self, timeout: float = 180) -> None:
        # the head keeps 127.0.0.1 through Ray's switch, as the embedded cluster does
        self._start_node("node_a", [str(VENV_BIN / "ray")],
                         ["--head", f"--port={self.port}", "--dashboard-host=127.0.0.1",
                          f"--dashboard-port={self.dashboard_port}", f"--ray-client-server-port={free_port()}"],
                         base_env(**{NO_MULTINODE: "0"}))
        self._wait_started("node_a", timeout)
        # with that switch on Ray refuses a second node, so the worker keeps 127.0.0.1 through a thin CLI wrapper
        self._start_node("node_b", [sys.executable, str(REPO / "tests" / "ray_loopback_node.py")],
                         [f"--address={self.address}"], base_env())
        self._wait_started("node_b", timeout)
        nodes = self.alive_nodes()
        for _ in range(30):  # the second raylet registers with the head's GCS shortly after it starts
            if len(nodes) == 2:
                break
            time.sleep(1)
            nodes = self.alive_nodes()
        assert len(nodes) == 2 and {n["NodeManagerAddress"] for n in nodes} == {"127.0.0.1"}, nodes
        self.node_ids = {name: n["NodeID"] for n in nodes for name in ("node_a", "node_b") if name in n["Resources"]}

    def _wait_started(self, name: str, timeout: float) -> None:
        log = self.root / name / "ray-start.log"
        deadline = time.time() + timeout
        while "Ray runtime started" not in log.read_text():
            dead = [p.args for p in self.processes if p.poll() is not None]
            if dead:  # a helper that cannot start its cluster: an error, not a test outcome
                raise RuntimeError(f"ray start exited early: {dead}\n{log.read_text()[-3000:]}")
            if time.time() > deadline:
                raise RuntimeError(f"{name} not up after {timeout:.0f}s\n{log.read_text()[-3000:]}")
            time.sleep(0.5)

    def alive_nodes(self) -> list[dict]:
        """`ray.nodes()` as a client sees it (in a subprocess: this test process may hold its own session)."""
        probe = subprocess.run([sys.executable, "-c", LIST_NODES.format(address=self.address)], env=base_env(),
                               capture_output=True, text=True, timeout=120, check=True)
        return json.loads(probe.stdout.strip().splitlines()[-1])

    def owned_processes(self) -> list[psutil.Process]:
        """Every live process this cluster started: the `ray start`s, their children, and what names its temp dir."""
        found: dict[int, psutil.Process] = {}
        for popen in self.processes:
            try:
                proc = psutil.Process(popen.pid)
                found.update({p.pid: p for p in [proc, *proc.children(recursive=True)]})
            except psutil.NoSuchProcess:
                pass
        root = str(self.root)
        for proc in psutil.process_iter(["cmdline"]):
            if any(root in part for part in proc.info["cmdline"] or []):
                found[proc.pid] = proc
        return list(found.values())

    def stop(self) -> None:
        """SIGTERM the nodes (each stops the processes it started), then kill whatever is left."""
        owned = self.owned_processes()
        for popen in self.processes:
            if popen.poll() is None:
                popen.terminate()
        _, alive = psutil.wait_procs(owned, timeout=45)
        for proc in alive + self.owned_processes():
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass
        for popen in self.processes:
            popen.wait(timeout=30)
