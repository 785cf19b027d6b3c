"""How the pipeline gets a Ray cluster: join one that exists, or start a private loopback one.

`cfg.cluster.address` (or `$RAY_ADDRESS`) names an existing cluster to join. Otherwise
an embedded single-node cluster is started bound to 127.0.0.1 with the dashboard off,
always a new one (`address="local"`): a stray cluster on the machine is never joined.
A fresh local cluster enables token auth; since this one is reachable only over
loopback and lives only as long as this process, auth is disabled for it alone.
On Linux Ray rewrites a 127.0.0.1 node address to the host's outward IP unless
its "no multi-node cluster" switch is set, so the embedded cluster sets it.
Whatever this context started, it shuts down; a joined cluster is left running.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from cluster.config import ClusterConfig
from cluster.reap import ray_descendants, reap


def cluster_address(cfg: ClusterConfig) -> str:
    return cfg.address or os.environ.get("RAY_ADDRESS", "")


def _keep_loopback() -> None:
    """Make Ray keep 127.0.0.1 as the node address (driver, and the processes it spawns)."""
    from ray._private import ray_constants

    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"
    ray_constants.ENABLE_RAY_CLUSTER = False


@contextmanager
def ray_session(cfg: ClusterConfig) -> Iterator[dict]:
    """Yield the cluster's resources; reuse a session already initialised in this process."""
    if ray.is_initialized():  # e.g. a test fixture owns the session
        yield ray.cluster_resources()
        return
    address = cluster_address(cfg)
    if address:
        if address.split(":")[0] in ("127.0.0.1", "localhost"):
            _keep_loopback()  # a cluster on this machine's loopback: the driver must use it too
        # Ray's own INFO lines and its workers' output stay out of the pipeline's output: they are in the
        # session's log directory and the dashboard (README, "Run on a Ray cluster")
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
    else:
        os.environ["RAY_AUTH_MODE"] = "disabled"  # loopback-only, process-lifetime cluster
        _keep_loopback()
        try:
            ray.init(
                address="local",  # always a new private cluster, never one whose address file another left behind
                _node_ip_address=cfg.node_ip or "127.0.0.1",
                include_dashboard=False,
                num_cpus=cfg.num_cpus or os.cpu_count(),
                log_to_driver=False,
                configure_logging=False,
            )
        except BaseException:  # e.g. the head timed out starting: what did start must not outlive us
            reap(ray_descendants(), grace_s=0.0)
            raise
    try:
        yield ray.cluster_resources()
    finally:
        started = [] if address else ray_descendants()  # a joined cluster's processes are not ours
        ray.shutdown()
        reap(started)
