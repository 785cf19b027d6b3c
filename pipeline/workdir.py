"""Paths inside the work directory: one place that says where each step writes."""

from __future__ import annotations

from pathlib import Path

from pipeline.config import Config


def workdir(cfg: Config) -> Path:
    return Path(cfg.workdir).expanduser().resolve()


def demo_dataset_dir(cfg: Config) -> Path:
    return workdir(cfg) / "datasets" / "metaworld-demo"


def cache_root(cfg: Config) -> Path:
    return Path(cfg.cache.root).expanduser().resolve() if cfg.cache.root else workdir(cfg) / "cache"


def mlflow_dir(cfg: Config) -> Path:
    return workdir(cfg) / "mlflow"


def ray_storage(cfg: Config) -> Path:
    return Path(cfg.cluster.storage).expanduser().resolve() if cfg.cluster.storage else workdir(cfg) / "ray_results"
