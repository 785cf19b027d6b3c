"""Write stage: one WebDataset tar shard per episode group, atomically, plus a sidecar record.

Why the webdataset library's `TarWriter` rather than Ray Data's `write_webdataset`:
the cache needs a deterministic shard name per episode group, a write under a
temporary name renamed only when complete, and a re-run that skips groups
already done. `write_webdataset` names files per block/task and writes in place,
so none of that holds. Each group is still written by a Ray task, in parallel.

Members are `.npy` (saved with allow_pickle=False) and `.json` only. After the
tar is renamed into place, `shard-NNNNN.json` records its sample count, sha256,
rejected episodes, normalization moments, timings and the Ray node of each stage;
a group counts as done only when both exist, which is what makes a killed run
resumable without duplicates.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import webdataset as wds

from stages.provenance import node_id
from stages.schema import OPTIONAL_SHARD_ARRAYS, SHARD_ARRAYS


def shard_name(shard: int) -> str:
    return f"shard-{shard:05d}.tar"


def sidecar_path(cache_dir: Path, shard: int) -> Path:
    return cache_dir / f"shard-{shard:05d}.json"


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def sample_key(episode: int, frame: int) -> str:
    return f"ep{episode:06d}_t{frame:06d}"


def write_json_atomic(path: Path, obj) -> None:
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True))
    os.replace(tmp, path)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def write_tar(path: Path, row: dict) -> int:
    """Write all samples of a group row to `path` (via a temp name); returns the sample count."""
    meta = json.loads(row["meta"])
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        writer = wds.TarWriter(f, encoder=False, mtime=0.0)  # fixed mtime: same inputs, same bytes
        for i, m in enumerate(meta):
            sample = {"__key__": sample_key(m["episode"], m["frame"]), "meta.json": json.dumps(m).encode()}
            names = SHARD_ARRAYS + tuple(n for n in OPTIONAL_SHARD_ARRAYS if n in row)
            sample.update({f"{name}.npy": npy_bytes(row[name][i]) for name in names})
            writer.write(sample)
        writer.close()
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return len(meta)


class WriteShard:
    """Ray Data `map` stage: group row -> shard on disk; returns the sidecar record as a small row."""

    def __init__(self, cache_dir: str):
        self.cache_dir = Path(cache_dir)

    def __call__(self, row: dict) -> dict:
        start = time.perf_counter()
        shard = int(row["shard"])
        path = self.cache_dir / shard_name(shard)
        count = write_tar(path, row)
        record = {
            "shard": shard,
            "file": path.name,
            "samples": count,
            "bytes": path.stat().st_size,
            "sha256": sha256_file(path),
            "rejects": json.loads(row["rejects"]),
            "decoders": json.loads(row["decoders"]),
            "stats": json.loads(row["stats"]),
            "timings": {"decode": float(row["t_decode"]), "encode": float(row["t_encode"]),
                        "downsample": float(row["t_downsample"]), "write": time.perf_counter() - start},
            "nodes": {"decode": str(row.get("node_decode", "")), "encode": str(row.get("node_encode", "")),
                      "write": node_id()},
        }
        write_json_atomic(sidecar_path(self.cache_dir, shard), record)
        return {"record": json.dumps(record)}
