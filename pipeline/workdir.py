"""Paths inside the work directory: one place that says where each step writes."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Config
from pipeline.output_paths import output_path
from sim.demos import demo_config_hash


def workdir(cfg: Config) -> Path:
    return output_path(cfg.workdir, "workdir")


def demo_dataset_dir(cfg: Config) -> Path:
    """One directory per demo config, so an ablation over the demos never records over another's dataset."""
    return workdir(cfg) / "datasets" / f"metaworld-demo-{demo_config_hash(cfg.demo)}"


def cache_root(cfg: Config) -> Path:
    return output_path(cfg.cache.root, "cache.root") if cfg.cache.root else workdir(cfg) / "cache"


def mlflow_dir(cfg: Config) -> Path:
    return workdir(cfg) / "mlflow"


def ray_storage(cfg: Config) -> Path:
    return output_path(cfg.cluster.storage, "cluster.storage") if cfg.cluster.storage else workdir(cfg) / "ray_results"
