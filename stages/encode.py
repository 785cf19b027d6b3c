"""Encode stage: a pool of actors, each holding one Wan VAE (`model.vae.build_vae`).

Used as `map_batches(VaeEncoder, batch_size=1, compute=ActorPoolStrategy(...))`:
one Ray batch is one shard group, and inside it clips are gathered from the
group's decoded frames and encoded `cache.encode_batch_size` at a time. So the
model loads once per actor, Ray batches never copy pixel clips (only the
uint8 frames they are cut from), and the VAE batch size is exactly the config's.
"""

from __future__ import annotations

import ctypes
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

from model.config import VaeConfig
from model.vae import build_vae, compression, encode
from stages.decode import clip_pixels
from stages.provenance import node_id

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"cache.dtype={name!r}; allowed values: {', '.join(DTYPES)}")
    return DTYPES[name]


def storage_dtype(name: str) -> np.dtype:
    """npy has no bfloat16: latents are stored as float16 when computed in float16, else float32."""
    return np.dtype(np.float16) if name == "float16" else np.dtype(np.float32)


def keep_memory_mapped() -> None:
    """Stop glibc handing the VAE's large activation buffers back to the OS after every layer.

    Otherwise they page-fault back in on the next call, and a large clip spends much
    of its time in the kernel (`benchmarks/preprocess.py`). No-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    for option in (-1, -2, -3):  # M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD
        libc.mallopt(option, ctypes.c_int(1 << 30))


@dataclass(frozen=True)
class EncodeSpec:
    vae: VaeConfig
    device: str  # "cpu" or "cuda"
    dtype: str
    batch_size: int
    threads: int = 0  # torch intra-op threads in the actor; 0 = leave torch's default
    current_frames: bool = False  # keep each sample's current frame (uint8) beside its latents


class VaeEncoder:
    """Ray Data callable class: adds `latents` [S, z, F, H/8, W/8] (and with `current_frames` the
    samples' first clip frames, uint8 [S, H, W, 3]) to a group row, drops `frames`."""

    def __init__(self, spec: EncodeSpec):
        keep_memory_mapped()
        if spec.threads:
            torch.set_num_threads(spec.threads)
        self.spec = spec
        self.vae = build_vae(spec.vae, spec.device, torch_dtype(spec.dtype))

    def encode_clips(self, frames: np.ndarray, clip_index: np.ndarray) -> np.ndarray:
        """All clips of a group, `batch_size` at a time."""
        out = []
        for i in range(0, len(clip_index), self.spec.batch_size):
            pixels = clip_pixels(frames, clip_index[i:i + self.spec.batch_size]).to(self.spec.device)
            out.append(encode(self.vae, pixels).float().cpu().numpy())
        if not out:
            t, sp = compression(self.vae.config)
            z, f = self.vae.config.z_dim, 1 + (clip_index.shape[1] - 1) // t
            return np.zeros((0, z, f, frames.shape[1] // sp, frames.shape[2] // sp), np.float32)
        return np.concatenate(out).astype(storage_dtype(self.spec.dtype), copy=False)

    def __call__(self, batch: dict) -> dict:
        start = time.perf_counter()
        rows = []
        for i in range(len(batch["shard"])):
            row = {k: v[i] for k, v in batch.items()}
            if self.spec.current_frames:  # the sample's current frame: the first of its clip
                row["current_frame"] = np.ascontiguousarray(row["frames"][row["clip_index"][:, 0]])
            row["latents"] = self.encode_clips(row.pop("frames"), row["clip_index"])
            row["t_encode"] = time.perf_counter() - start
            row["node_encode"] = node_id()
            rows.append(row)
        return {k: _column([r[k] for r in rows]) for k in rows[0]}


def _column(values: list) -> np.ndarray:
    """Stack a column; arrays of different shapes (groups differ in size) become an object array."""
    if isinstance(values[0], np.ndarray) and len({v.shape for v in values}) > 1:
        col = np.empty(len(values), dtype=object)
        col[:] = values
        return col
    return np.asarray(values) if not isinstance(values[0], np.ndarray) else np.stack(values)
