"""Pretrained weights named by MLflow URI, made local for the model code.

`cache.vae.pretrained_path` and `model.backbone.pretrained_path` accept a local
diffusers directory or `models:/NAME@ALIAS`, `models:/NAME/VERSION`,
`runs:/RUN/PATH`. The model layer only ever loads a local directory (with
diffusers' `from_pretrained`, as for a real Wan2.1 directory), so the URIs are
resolved here: the registered artifacts are downloaded once into
`<workdir>/pretrained/<sha256 of their files>/`, and a small index per model
version points there, so a second resolution of the same version downloads
nothing. A content-addressed path also makes run names and caches that depend
on the path depend on the weights, not on what an alias pointed at that day.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

from pipeline.config import Config
from pipeline.console import console
from pipeline.workdir import workdir

URI_SCHEMES = ("models:/", "runs:/")


def pretrained_root(cfg: Config) -> Path:
    return workdir(cfg) / "pretrained"


def is_uri(path: str) -> bool:
    return path.startswith(URI_SCHEMES)


def tree_digest(root: Path) -> str:
    """sha256 over the relative paths and contents of every file under `root`."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def model_version_of(uri: str) -> tuple[str, str] | None:
    """(name, version) a `models:/` URI means now (aliases and `latest` looked up); None for `runs:/`."""
    from mlflow import MlflowClient

    from pipeline.eval_tracking import registered_version

    if not uri.startswith("models:/"):
        return None
    client = MlflowClient()
    try:
        name, version = registered_version(client, uri.removeprefix("models:/"))
    except LookupError as err:
        raise FileNotFoundError(f"'{uri}': {err}") from None
    client.get_model_version(name, version)  # fails with MLflow's message when it does not exist
    return name, version


def resolve_pretrained(uri: str, cfg: Config) -> Path:
    """A local directory holding the artifacts of `uri` (downloaded at most once per model version)."""
    import mlflow

    from pipeline import tracking

    if not is_uri(uri):
        path = Path(uri).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"pretrained weights '{uri}': no such directory")
        return path
    tracking.setup(cfg)
    root = pretrained_root(cfg)
    version = model_version_of(uri)
    index = root / "index" / version[0] / f"{version[1]}.json" if version else None
    if index is not None and index.exists():
        local = root / json.loads(index.read_text())["sha256"]
        if local.is_dir():
            return local
    source = f"models:/{version[0]}/{version[1]}" if version else uri
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
        console.print(f"pretrained: downloading {source} ({uri})")
        downloaded = Path(mlflow.artifacts.download_artifacts(source, dst_path=tmp))
        sha = tree_digest(downloaded)
        local = root / sha
        if not local.exists():
            shutil.move(str(downloaded), str(local))
    if index is not None:
        index.parent.mkdir(parents=True, exist_ok=True)
        index.write_text(json.dumps({"uri": source, "sha256": sha}))
    sources = root / "index" / "sources"
    sources.mkdir(parents=True, exist_ok=True)
    (sources / f"{sha}.txt").write_text(source)
    console.print(f"pretrained: {uri} -> {local}")
    return local


def resolve_config_paths(cfg: Config) -> dict[str, str]:
    """Replace URIs in the pretrained-path fields of `cfg` by local directories, in place.

    Returns {field: original URI} of what was replaced (for the MLflow tags of a run).
    """
    replaced = {}
    for name, section in (("cache.vae", cfg.cache.vae), ("model.backbone", cfg.model.backbone)):
        if is_uri(section.pretrained_path):
            replaced[f"{name}.pretrained_path"] = section.pretrained_path
            section.pretrained_path = str(resolve_pretrained(section.pretrained_path, cfg))
    return replaced


def describe(path: str, cfg: Config) -> str:
    """What a (resolved) pretrained-path field holds, for tags: `random`, `models:/NAME/VERSION (dir)` or the dir."""
    if not path:
        return "random"
    source = pretrained_root(cfg) / "index" / "sources" / f"{Path(path).name}.txt"
    return f"{source.read_text()} ({path})" if source.exists() else path
