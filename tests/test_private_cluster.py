"""Without RAY_ADDRESS the pipeline starts its own cluster, whatever address file another Ray left behind."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from loopback_cluster import REPO, base_env

PROBE = """
from cluster.ray_session import ray_session
from cluster.config import ClusterConfig
with ray_session(ClusterConfig(num_cpus=1)) as resources:
    print("CPU", resources["CPU"])
"""


def test_a_stray_address_file_is_not_joined():
    # Ray's address file, left by a cluster that is gone; `ray.init()` without an address would try to join it
    tmp = Path(tempfile.mkdtemp(prefix="lw-stray-", dir="/tmp"))  # short: Ray's unix sockets live under it
    try:
        (tmp / "ray").mkdir()
        (tmp / "ray" / "ray_current_cluster").write_text("127.0.0.1:9")
        out = subprocess.run([sys.executable, "-c", PROBE], env=base_env(RAY_TMPDIR=str(tmp)), cwd=REPO,
                             capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stdout + out.stderr
        assert "CPU 1.0" in out.stdout
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
