"""Shared fixtures: one loopback Ray cluster for the whole session."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests import lerobot_fixtures directly
os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")  # ~30 s -> ~12 s per tiny TorchTrainer run
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(autouse=True)
def tracking_uri_stays_put():
    """`mlflow.set_tracking_uri` also exports MLFLOW_TRACKING_URI: undo it after every test.

    Otherwise one in-process test's store leaks into every later test's
    `python -m pipeline.*` subprocess, which honours that variable.
    """
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


@pytest.fixture(scope="session")
def ray_cluster():
    """An embedded cluster on 127.0.0.1 (auth off: loopback only); yields its GCS address."""
    import ray

    from cluster.config import ClusterConfig
    from cluster.ray_session import ray_session

    with ray_session(ClusterConfig(num_cpus=2)):
        yield ray.get_runtime_context().gcs_address


def subprocess_env(address: str) -> dict:
    """Environment for a `python -m pipeline.*` subprocess joining the test cluster."""
    return {**os.environ, "RAY_ADDRESS": address, "PYTHONPATH": os.getcwd()}
