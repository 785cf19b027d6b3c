"""Per-worker training batches from the shard cache.

Each rank reads its own shards with `CacheDataset` (tar + `np.load`, no Ray
Data in the loop): reading and collating is small next to a training step, so
a Ray Data pipeline per worker would add actors and object-store copies for
little. For small, fast models `train.keep_shards_in_memory` parses each shard
once and serves later epochs from RAM (`benchmarks/loader.py`). Actions and
proprio are normalized here, with the manifest's min/max, as the policy does at
inference. The order is a pure function of (seed, rank, world size), so a
resumed run skips exactly the samples it already consumed.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator

import torch
from torch import nn
from torch.utils.data import default_collate

from model.normalize import MinMax
from pipeline.config import Config
from stages.cache_loader import CacheHandle
from stages.schema import BATCH_KEYS, OPTIONAL_BATCH_KEYS


def split_cache(cache: CacheHandle, heldout: int, key: str = "train.heldout_shards") -> tuple[CacheHandle, CacheHandle]:
    """(training, held-out) views of the cache: its last `heldout` shards (whole episodes) are never trained on."""
    if heldout < 0 or heldout >= len(cache.shard_paths):
        raise ValueError(f"{key}={heldout} must leave training shards: the cache has {len(cache.shard_paths)} "
                         "(lower cache.samples_per_shard for more)")
    cut = len(cache.shard_paths) - heldout
    return (dataclasses.replace(cache, shard_paths=cache.shard_paths[:cut]),
            dataclasses.replace(cache, shard_paths=cache.shard_paths[cut:]))


def random_shift(pixels: torch.Tensor, pad: int, gen: torch.Generator) -> torch.Tensor:
    """Each image [B, 3, (1,) H, W] moved by up to `pad` pixels in x and y, edges repeated: the shortcut's
    augmentation, so a few layouts per task stretch a little towards the layouts never shown."""
    if pad <= 0:
        return pixels
    clip = pixels.ndim == 5
    images = pixels[:, :, 0] if clip else pixels
    b, _, h, w = images.shape
    padded = nn.functional.pad(images, (pad, pad, pad, pad), mode="replicate")
    dx, dy = torch.randint(0, 2 * pad + 1, (2, b), generator=gen).tolist()
    shifted = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    return shifted[:, :, None] if clip else shifted


def batches(cfg: Config, cache: CacheHandle, rank: int, world: int, skip: int = 0,
            device: torch.device | str = "cpu") -> Iterator[dict[str, torch.Tensor]]:
    """Endless shuffled, normalized batches of `train.batch_size` for this rank, after skipping `skip` samples.

    With `train.pixel_shift` > 0 the current frames (`current_pixels`) are randomly shifted; the
    shifts are seeded by (seed, rank, skip), so a resumed run draws them afresh but reproducibly."""
    samples = iter(cache.dataset(rank=rank, world_size=world, shuffle=True, seed=cfg.train.seed + rank, repeat=True,
                                 in_memory=cfg.train.keep_shards_in_memory))
    samples = itertools.islice(samples, skip, None)
    # an action-free cache (video pretraining) has no action stats: its empty action vectors stay as they are
    norms = {name: MinMax.from_stats(cache.stats[name]) for name in ("proprio", "actions")
             if (cache.stats.get(name) or {}).get("min")}
    gen = torch.Generator().manual_seed(hash((cfg.train.seed, rank, skip)) & 0x7FFFFFFF)  # ints hash alike everywhere
    while True:
        chunk = list(itertools.islice(samples, cfg.train.batch_size))
        batch = default_collate([{k: s[k] for k in BATCH_KEYS + OPTIONAL_BATCH_KEYS if k in s} for s in chunk])
        batch.update({name: norm.normalize(batch[name]) for name, norm in norms.items()})
        if "current_pixels" in batch:
            batch["current_pixels"] = random_shift(batch["current_pixels"], cfg.train.pixel_shift, gen)
        yield {k: v.to(device, non_blocking=True) for k, v in batch.items()}
