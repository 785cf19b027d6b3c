"""The validating cache loader training uses.

`open_cache(root, wanted, latent_downsample)` finds the cache whose identity is
exactly `wanted` (dataset fingerprint, cache settings, VAE and text-encoder
identities, schema), or one from which it can be derived (a coarser
`latent_downsample`, pooled on load), and otherwise refuses, naming every field
that differs. `CacheDataset` iterates the samples as dicts of tensors
(`stages.schema`), split by (rank, world_size) and by DataLoader worker. Shards
are read with `tarfile` and `np.load(allow_pickle=False)`: no pickle anywhere.
"""

from __future__ import annotations

import io
import json
import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from model.pixels import to_unit_range
from stages.downsample import pool_latents
from stages.manifest import (
    MANIFEST,
    ManifestError,
    diff_identity,
    fingerprint,
    read_manifest,
    validate_shards,
)
from stages.schema import SHARD_ARRAYS
from stages.shard_check import verified_bytes
from stages.text import load_text


class CacheMismatchError(ValueError):
    """No cache matches the config; the message names the differing fields."""


@dataclass
class CacheHandle:
    cache_dir: Path
    manifest: dict
    shard_paths: list[Path]
    stats: dict  # {"actions"|"proprio": {"min", "max", "mean", "std"}}
    text: dict[str, tuple[np.ndarray, np.ndarray]]  # text key -> ([L, D] float32, [L] bool)
    extra_pool: int = 1  # pool cached video latents again by this on load (derived downsample)

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    def dataset(self, rank: int = 0, world_size: int = 1, shuffle: bool = False, seed: int = 0,
                repeat: bool = False, in_memory: bool = False) -> "CacheDataset":
        return CacheDataset(self, rank, world_size, shuffle, seed, repeat, in_memory)


def _candidates(root: Path) -> list[tuple[Path, dict]]:
    out = []
    for path in sorted(root.glob(f"*/{MANIFEST}")):
        try:
            out.append((path.parent, read_manifest(path.parent)))
        except ManifestError:
            continue
    return out


def find_cache(root: Path, wanted: dict) -> tuple[Path, dict]:
    """The exact cache, else one the wanted one derives from, else a CacheMismatchError."""
    exact = root / fingerprint(wanted)
    if (exact / MANIFEST).exists():
        return exact, read_manifest(exact)
    candidates = _candidates(root)
    scored = sorted(((diff_identity(wanted, m["identity"], m["derivable"]), d, m) for d, m in candidates),
                    key=lambda t: len(t[0]))
    if scored and not scored[0][0]:
        return scored[0][1], scored[0][2]
    if not scored:
        raise CacheMismatchError(f"no cache under {root} (fingerprint {fingerprint(wanted)} wanted); "
                                 "build it with `python -m pipeline.preprocess` and the same overrides")
    diffs, nearest, _ = scored[0]
    raise CacheMismatchError(
        f"no cache under {root} matches this config (fingerprint {fingerprint(wanted)}); the nearest, "
        f"{nearest.name}, differs in:\n  " + "\n  ".join(diffs)
    )


def open_cache(root: Path, wanted: dict, verify: bool = False) -> CacheHandle:
    """Open the cache under `root` whose identity is (or derives to) `wanted`."""
    cache_dir, manifest = find_cache(Path(root), wanted)
    validate_shards(cache_dir, manifest, hash_contents=verify)
    cached = manifest["identity"]["cache.latent_downsample"]
    want = wanted["cache.latent_downsample"]
    extra = want // cached
    if extra * cached != want:
        raise CacheMismatchError(f"cache.latent_downsample={want} cannot be derived from the cached {cached}")
    text = {key: load_text(cache_dir, key) for key in set(manifest["text_keys"].values())}
    return CacheHandle(cache_dir, manifest, [cache_dir / s["file"] for s in manifest["shards"]],
                       manifest["stats"], text, extra)


def read_shard(path: Path, content: bytes | None = None) -> Iterator[dict]:
    """Samples of one tar shard as {member suffix: ndarray | dict}, in file order.

    `content`: the shard's bytes, already read and checked (`verified_bytes`); else the file is read.
    """
    try:
        yield from _parse_shard(path, content)
    except (tarfile.TarError, EOFError, ValueError, KeyError) as err:
        if isinstance(err, ManifestError):
            raise
        raise ManifestError(f"{path}: not a readable cache shard ({type(err).__name__}: {err}); rebuild the "
                            "cache with `python -m pipeline.preprocess`") from err


def _parse_shard(path: Path, content: bytes | None) -> Iterator[dict]:
    current, key = {}, None
    with tarfile.open(path, "r", fileobj=None if content is None else io.BytesIO(content)) as tar:
        for member in tar:
            if not member.isfile():
                continue
            sample_key, _, suffix = member.name.partition(".")
            if key is not None and sample_key != key:
                yield _complete(current, path, key)
                current = {}
            key = sample_key
            data = tar.extractfile(member).read()
            if suffix.endswith(".npy"):
                current[suffix[:-4]] = np.load(io.BytesIO(data), allow_pickle=False)
            elif suffix.endswith(".json"):
                current[suffix[:-5]] = json.loads(data)
            else:
                raise ManifestError(f"{path}: unexpected member {member.name}")
        tar.fileobj.seek(tar.offset)  # tarfile ends quietly at a damaged header: only zeros may follow
        if tar.fileobj.read().strip(b"\0"):
            raise ManifestError(f"{path}: damaged tar header at byte {tar.offset}; the shard is cut short there")
    if current:
        yield _complete(current, path, key)


def _complete(sample: dict, path: Path, key: str) -> dict:
    missing = [name for name in ("meta", *SHARD_ARRAYS) if name not in sample]
    if missing:
        raise ManifestError(f"{path}: sample {key!r} lacks {missing} (members: {sorted(sample)})")
    return sample


class CacheDataset(IterableDataset):
    """Samples of a cache as dicts of tensors (`stages.schema` keys + episode, frame), in the robot's units.

    `in_memory` keeps each shard's decoded samples after its first read, so later
    epochs skip the tar and `np.load` parsing (pure Python); the order is the same.
    Each rank keeps only its own shards: about the cache's size on disk in all.
    The tensors of a sample may share memory with what is kept (as `text` always
    does with the handle): collate them, do not change them in place.
    """

    def __init__(self, handle: CacheHandle, rank: int = 0, world_size: int = 1, shuffle: bool = False,
                 seed: int = 0, repeat: bool = False, in_memory: bool = False):
        if len(handle.shard_paths) < world_size:
            raise ValueError(f"{len(handle.shard_paths)} shards cannot be split over {world_size} ranks; "
                             "lower cache.samples_per_shard and rebuild the cache")
        self.handle, self.shuffle, self.seed, self.repeat = handle, shuffle, seed, repeat
        self.shards = handle.shard_paths[rank::world_size]
        self.in_memory = in_memory
        self._kept: dict[Path, list[dict]] = {}

    def _my_shards(self) -> list[Path]:
        info = get_worker_info()
        return self.shards if info is None else self.shards[info.id::info.num_workers]

    def to_tensors(self, raw: dict) -> dict:
        h = self.handle
        text, text_mask = h.text[raw["meta"]["text_key"]]
        video = raw["video_latents"]
        if h.extra_pool > 1:
            video = pool_latents(video, h.extra_pool)
        extra = {}
        if "current_frame" in raw:
            extra["current_pixels"] = to_unit_range(raw["current_frame"])[:, None]
        return extra | {
            "video_latents": torch.from_numpy(np.asarray(video, dtype=np.float32)),
            "video_frame_mask": torch.from_numpy(raw["video_frame_mask"]),
            "current_latent": torch.from_numpy(raw["current_latent"].astype(np.float32)),
            "proprio": torch.from_numpy(raw["proprio"].astype(np.float32)),
            "actions": torch.from_numpy(raw["actions"].astype(np.float32)),
            "action_mask": torch.from_numpy(raw["action_mask"]),
            "text": torch.from_numpy(text),
            "text_mask": torch.from_numpy(text_mask),
            "episode": torch.tensor(raw["meta"]["episode"]),
            "frame": torch.tensor(raw["meta"]["frame"]),
        }

    def _samples(self, path: Path) -> Iterator[dict] | list[dict]:
        """One shard's raw samples in file order: a list when it will be shuffled or kept."""
        if not self.in_memory:
            return list(self._read(path)) if self.shuffle else self._read(path)
        if path not in self._kept:
            self._kept[path] = list(self._read(path))
        return list(self._kept[path])  # a copy: shuffling must leave the kept file order alone

    def _read(self, path: Path) -> Iterator[dict]:
        """Samples of a shard whose bytes match the manifest's sha256 (else `ShardError`)."""
        return read_shard(path, verified_bytes(path, self.handle.cache_dir, self.handle.manifest))

    def __iter__(self) -> Iterator[dict]:
        epoch = 0
        while True:
            shards = list(self._my_shards())
            rng = random.Random(self.seed + epoch)
            if self.shuffle:
                rng.shuffle(shards)
            for path in shards:
                samples = self._samples(path)
                if self.shuffle:
                    rng.shuffle(samples)
                for raw in samples:
                    yield self.to_tensors(raw)
            epoch += 1
            if not self.repeat:
                return
