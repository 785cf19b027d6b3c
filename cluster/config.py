"""How the pipeline reaches Ray."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ClusterConfig:
    address: str = ""  # empty = $RAY_ADDRESS or an embedded local cluster
    node_ip: str = "127.0.0.1"
    num_cpus: int = 0  # 0 = all cores for the embedded cluster
    storage: str = ""  # shared storage for Ray Train checkpoints; empty = <workdir>/ray_results
