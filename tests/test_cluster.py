"""Running on a Ray cluster: the multi-node recipes and a real two-node run (`ray job submit`: test_jobs.py).

The two-node cluster is real: two `ray start` nodes on 127.0.0.1, 1 CPU each,
so the cache's decode and encode work cannot fit on one node and must spread.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import ray
import yaml
from lerobot_fixtures import write_v3_dataset
from loopback_cluster import REPO, LoopbackCluster, base_env
from tiny import CACHE

from pipeline.cli import load_config
from pipeline.preprocess import preprocess
from stages.manifest import read_manifest, validate_shards

CLUSTER = REPO / "cluster"


def test_recipes_parse_and_run_the_pipeline():
    """`ray up` config, KubeRay RayJob and image: valid YAML, the right entry point, Ray and torch pinned."""
    up = yaml.safe_load((CLUSTER / "ray-cluster.yaml").read_text())
    assert up["provider"]["type"] == "local" and up["max_workers"] >= 1
    assert any("ray start --head" in c for c in up["head_start_ray_commands"])
    assert any("ray start --address" in c for c in up["worker_start_ray_commands"])
    assert any("torch==2.13.0" in c for c in up["setup_commands"])
    assert "python -m pipeline.run" in (CLUSTER / "ray-cluster.yaml").read_text()  # the job it is for

    job = yaml.safe_load((CLUSTER / "rayjob.yaml").read_text())
    assert job["kind"] == "RayJob" and job["apiVersion"].startswith("ray.io/")
    entry = shlex.split(job["spec"]["entrypoint"])
    assert entry[:3] == ["python", "-m", "pipeline.run"]
    cfg = load_config(entry[3:])[0]  # its overrides are valid keys and values of this config
    assert cfg.workdir.startswith("/mnt/shared") and cfg.cluster.storage.startswith("/mnt/shared")
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == ray.__version__
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["working_dir"]

    docker = (CLUSTER / "Dockerfile").read_text()
    assert f"FROM rayproject/ray:{ray.__version__}-py311" in docker and "torch==2.13.0" in docker


@pytest.fixture(scope="module")
def two_nodes():
    # a short root: Ray's unix sockets live under it and their paths must stay under 108 bytes
    cluster = LoopbackCluster(Path(tempfile.mkdtemp(prefix="lw-ray-", dir="/tmp")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        assert not cluster.owned_processes(), "Ray processes of the test cluster outlived it"
        shutil.rmtree(cluster.root, ignore_errors=True)


def test_cache_built_on_two_nodes_equals_the_single_node_cache(two_nodes, ray_cluster, tmp_path):
    write_v3_dataset(tmp_path / "data", lengths=(12, 15, 10, 9, 11, 13))
    args = [f"data.path={tmp_path / 'data'}", *CACHE, "cache.samples_per_shard=6", "cache.sample_stride=2"]
    env = base_env(RAY_ADDRESS=two_nodes.address)
    out = subprocess.run([sys.executable, "-m", "pipeline.preprocess", *args, f"cache.root={tmp_path / 'multi'}"],
                         env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    multi_dir = next((tmp_path / "multi").iterdir())
    multi = read_manifest(multi_dir)
    validate_shards(multi_dir, multi, hash_contents=True)

    # the work ran on both nodes, and the manifest says which node did what
    used = {stage: {n[stage] for n in multi["nodes"].values()} for stage in ("decode", "encode", "write")}
    assert set().union(*used.values()) == set(two_nodes.node_ids.values()), (used, two_nodes.node_ids)

    # the same cache as a single-node build (the session's embedded cluster): same identity, same bytes
    single = preprocess(load_config([*args, f"cache.root={tmp_path / 'single'}"])[0])
    assert single.ok and not single.skipped
    assert multi["fingerprint"] == single.fingerprint
    assert multi["shards"] == single.manifest["shards"]  # file names, sample counts, sizes, sha256s
    assert set(single.manifest["nodes"]) == set(multi["nodes"])  # provenance is kept, but not in the identity
