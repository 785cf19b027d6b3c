"""The cache's identity, fingerprint and manifest: what makes a cache trustworthy.

A cache lives in `<cache root>/<fingerprint>/`. The fingerprint hashes the
identity: the source dataset's content fingerprint, every cache setting that
changes sample content, the VAE identity (config + weights hash), the text
encoder identity and the schema version. `manifest.json` is written last and
atomically, so its presence means the cache is complete. Identity keys are the
config paths they come from, so a mismatch can be reported field by field.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from stages.config import CacheConfig, DataConfig

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"


def cache_identity(c: CacheConfig, data: DataConfig, dataset_fingerprint: str, cameras: list[str], vae_id: dict,
                   text_id: dict) -> dict:
    return {
        "schema": SCHEMA_VERSION,
        "data.fingerprint": dataset_fingerprint,
        "data.cameras": list(cameras),
        "data.state_key": data.state_key,
        "data.action_key": data.action_key,
        "cache.image_height": c.image_height,
        "cache.image_width": c.image_width,
        "cache.num_frames": c.num_frames,
        "cache.frame_stride": c.frame_stride,
        "cache.action_horizon": c.action_horizon,
        "cache.sample_stride": c.sample_stride,
        "cache.latent_downsample": c.latent_downsample,
        "cache.samples_per_shard": c.samples_per_shard,
        "cache.dtype": c.dtype,
        "cache.vae": vae_id,
        "cache.text": text_id,
    } | ({"cache.current_frames": True} if c.current_frames else {})  # absent by default: older caches stay valid


def identify(cache: CacheConfig, data: DataConfig, reader) -> dict:
    """The identity the config asks for on the dataset `reader` opened: builds the VAE to hash its weights."""
    import torch

    from model.vae import build_vae, vae_identity
    from stages.text import text_identity

    vae_id = vae_identity(build_vae(cache.vae, "cpu", torch.float32))
    return cache_identity(cache, data, reader.fingerprint(), reader.camera_keys, vae_id, text_identity(cache.text))


def fingerprint(identity: dict) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:24]


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else k))
        return out
    return {prefix: obj}


def diff_identity(wanted: dict, cached: dict, derivable: dict | None = None) -> list[str]:
    """Differing fields as 'key: wanted X, cache has Y'; derivable values do not count."""
    derivable = derivable or {}
    a, b = _flatten(wanted), _flatten(cached)
    out = []
    for key in sorted(set(a) | set(b)):
        if a.get(key) == b.get(key) or a.get(key) in derivable.get(key, []):
            continue
        out.append(f"{key}: wanted {_short(a.get(key))}, cache has {_short(b.get(key))}")
    return out


def _short(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def derivable(identity: dict, latent_height: int, latent_width: int) -> dict:
    """Settings a loader may derive from this cache: coarser latent downsample factors.

    The cached clip is pooled by d to h x w; pooling it again by k gives factor d*k
    when k divides both h and w.
    """
    d = identity["cache.latent_downsample"]
    factors = [d * k for k in range(2, min(latent_height, latent_width) + 1)
               if latent_height % k == 0 and latent_width % k == 0]
    return {"cache.latent_downsample": factors}


def merge_stats(parts: list[dict]) -> dict:
    """Per-shard moments (count, sum, sumsq, min, max) -> min, max, mean, std per dimension."""
    out = {}
    for name in ("actions", "proprio"):
        chunks = [p[name] for p in parts if p and p.get(name)]
        if not chunks:
            out[name] = None
            continue
        count = sum(c["count"] for c in chunks)
        total = np.sum([c["sum"] for c in chunks], axis=0)
        sumsq = np.sum([c["sumsq"] for c in chunks], axis=0)
        mean = total / count
        std = np.sqrt(np.maximum(sumsq / count - mean * mean, 0.0))
        out[name] = {"count": count, "min": np.min([c["min"] for c in chunks], axis=0).tolist(),
                     "max": np.max([c["max"] for c in chunks], axis=0).tolist(),
                     "mean": mean.tolist(), "std": std.tolist()}
    return out


class ManifestError(ValueError):
    """A manifest is missing, malformed, or does not match its shards."""


REQUIRED = ("schema", "fingerprint", "episodes", "identity", "shards", "stats", "samples", "text_keys", "derivable")


def read_manifest(cache_dir: Path) -> dict:
    path = Path(cache_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest (the cache is missing or was not completed)") from None
    except ValueError as err:
        raise ManifestError(f"{path}: not valid JSON ({err})") from err
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise ManifestError(f"{path}: missing fields {missing}")
    if manifest["schema"] != SCHEMA_VERSION:
        raise ManifestError(f"{path}: schema {manifest['schema']}, this code reads schema {SCHEMA_VERSION}")
    if fingerprint(manifest["identity"]) != manifest["fingerprint"]:
        raise ManifestError(f"{path}: fingerprint does not match the recorded identity")
    if sum(s["samples"] for s in manifest["shards"]) != manifest["samples"]:
        raise ManifestError(f"{path}: shard sample counts do not add up to {manifest['samples']}")
    return manifest


def validate_shards(cache_dir: Path, manifest: dict, hash_contents: bool = False) -> None:
    """Every listed shard exists with its size (and, if asked, its sha256)."""
    from stages.shards import sha256_file

    for shard in manifest["shards"]:
        path = Path(cache_dir) / shard["file"]
        if not path.is_file():
            raise ManifestError(f"{path}: listed in the manifest but missing")
        if path.stat().st_size != shard["bytes"]:
            raise ManifestError(f"{path}: {path.stat().st_size} bytes, manifest says {shard['bytes']}")
        if hash_contents and sha256_file(path) != shard["sha256"]:
            raise ManifestError(f"{path}: sha256 differs from the manifest")
