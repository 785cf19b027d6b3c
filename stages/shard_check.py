"""Shard bytes checked against the manifest's sha256 as training reads them.

A shard is read into memory once and hashed there, so nothing of a damaged,
truncated or missing shard reaches a batch, and no second read is needed. Every
failure is a `ShardError` naming the shard, its cache and how to rebuild it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from stages.manifest import ManifestError


class ShardError(ManifestError):
    """A shard differs from what its manifest records; the message says how to rebuild it."""


def rebuild_hint(cache_dir: Path, manifest: dict, shard: Path) -> str:
    config = manifest.get("config", {})
    data = config.get("data.path") or "<dataset>"
    root = config.get("cache.root") or str(Path(cache_dir).parent)
    sidecar = Path(shard).with_suffix(".json")
    return (f"rebuild it: `rm {shard} {sidecar}` then `python -m pipeline.preprocess data.path={data} "
            f"cache.root={root}` with the same cache.* overrides as this run (only that shard is redone)")


def shard_failure(path: Path, cache_dir: Path, manifest: dict, reason: str) -> ShardError:
    return ShardError(f"shard {Path(path).name} of cache {cache_dir}: {reason}; "
                      + rebuild_hint(cache_dir, manifest, path))


def verified_bytes(path: Path, cache_dir: Path, manifest: dict) -> bytes:
    """The shard's bytes, after checking their sha256 (and size) against the manifest."""
    listed = {s["file"]: s for s in manifest["shards"]}.get(Path(path).name)
    if listed is None:
        raise shard_failure(path, cache_dir, manifest, "not listed in the manifest")
    try:
        data = Path(path).read_bytes()
    except OSError as err:  # missing on this node, unreadable
        raise shard_failure(path, cache_dir, manifest, f"cannot be read ({err.strerror or err})") from err
    if len(data) != listed["bytes"]:
        raise shard_failure(path, cache_dir, manifest,
                            f"{len(data)} bytes, the manifest says {listed['bytes']} (truncated or replaced)")
    digest = hashlib.sha256(data).hexdigest()
    if digest != listed["sha256"]:
        raise shard_failure(path, cache_dir, manifest,
                            f"sha256 {digest[:16]}... differs from the manifest's {listed['sha256'][:16]}... "
                            "(the file is damaged)")
    return data
