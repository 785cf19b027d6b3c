"""Training batches read from the shard cache: streamed from disk every epoch, against kept in memory.

`pipeline.train.data.batches` over a built cache (the preset's, or `workdir=...`),
one process, no model: milliseconds per batch of the first epoch (both arms parse
every shard) and of the epochs after it, where `train.keep_shards_in_memory`
serves the decoded samples from RAM. Both arms yield the same batches in the
same order; the last line says whether they did (digests of every epoch).

    python -m benchmarks.loader preset=bench workdir=work-dagger [--epochs 2] [key=value ...]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import time

from benchmarks import machine


def timed_epochs(cfg, handle, epochs: int) -> tuple[list[float], list[str]]:
    """ms per batch of each epoch (the loader alone), and a digest of each epoch's batches."""
    from pipeline.train.data import batches

    per_epoch = -(-handle.manifest["samples"] // cfg.train.batch_size)
    stream, times, digests = batches(cfg, handle, rank=0, world=1), [], []
    for _ in range(epochs):
        spent, digest = 0.0, hashlib.sha256()
        for _ in range(per_epoch):
            start = time.perf_counter()
            batch = next(stream)
            spent += time.perf_counter() - start
            for key in sorted(batch):
                digest.update(key.encode() + batch[key].numpy().tobytes())
        times.append(spent * 1000 / per_epoch)
        digests.append(digest.hexdigest())
    return times, digests


def main(argv: list[str] | None = None) -> None:
    from pipeline.cli import load_config
    from pipeline.preprocess import open_cache_for

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=2, help="epochs per arm (the first parses every shard)")
    args, rest = parser.parse_known_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2: the first epoch reads the shards in both arms")
    cfg = load_config(rest)[0]
    handle = open_cache_for(cfg)
    arms = {}
    for kept in (False, True):
        arm_cfg = copy.deepcopy(cfg)
        arm_cfg.train.keep_shards_in_memory = kept
        arms[kept] = timed_epochs(arm_cfg, handle, args.epochs)
    same = arms[False][1] == arms[True][1]
    streamed, kept = arms[False][0], arms[True][0]
    print(f"\nmachine: {machine.describe()}")
    print(f"cache {handle.fingerprint[:12]}: {handle.manifest['samples']} samples in {len(handle.shard_paths)} shards; "
          f"batch {cfg.train.batch_size}, pixel_shift {cfg.train.pixel_shift}, {args.epochs} epochs per arm\n")
    print("| epoch | streamed, ms/batch | kept in memory, ms/batch | streamed / kept |\n|---|---:|---:|---:|")
    for i, (s, k) in enumerate(zip(streamed, kept)):
        print(f"| {i + 1}{' (reads the shards)' if i == 0 else ''} | {s:.1f} | {k:.1f} | {s / k:.2f}x |")
    print(f"\nsame batches in the same order: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()
