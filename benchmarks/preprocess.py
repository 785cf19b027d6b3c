"""Benchmark the offline cache on this machine: Ray pipeline vs the naive loop vs encode alone.

`python -m benchmarks.preprocess [--geometry demo|paper|both|none] [--paper-samples N] [--scale K] [--bf16]`

On the same episodes and samples, measures
- pipeline: the production Ray Data pipeline (`pipeline.preprocess.run_pipeline`), wall time
  from submission to the last shard written (VAE build in the actor included);
- naive: one process, per sample: decode its frames, resize, encode one clip at a time;
- encode only: the VAE calls alone on pre-decoded clips, in one actor set up exactly like the
  pipeline's (same batch size, threads and allocator settings): the bound on this machine;
- peak memory: the largest summed RSS of this process and all Ray worker processes;
- with `--bf16`: encode only again with the VAE in bfloat16 (`cache.dtype=bfloat16`), and the largest
  difference of its latents from the fp32 ones on the same clips (normalized latents, std ~1).
The demo geometry uses the demo preset; the paper geometry is 2 x 224x224 cameras side by
side, 9 frames at stride 4, and the full-size Wan VAE with random weights.
`--scale K` also runs the pipeline on the demo's first `--demo-episodes` episodes and on K times
as many, grouped into shards as `pipeline.preprocess` groups them: time and peak memory ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil
import torch
from rich.console import Console
from rich.table import Table

from benchmarks import machine
from model.precision import bf16_support
from pipeline.cli import load_config
from pipeline.config import Config
from pipeline.console import console
from pipeline.preprocess import dataset_root, run_pipeline
from stages.decode import DecodeGroup, DecodeSpec, clip_pixels, resize
from stages.encode import EncodeSpec, VaeEncoder
from stages.lerobot import LeRobotDataset
from stages.plan import ClipGeometry, group_episodes, plan_episode, samples_in
from stages.shards import sidecar_path
from stages.text import ensure_text_embeddings, text_identity

PAPER_GEOMETRY = ["cache.image_height=224", "cache.image_width=224", "cache.num_frames=9",
                  "cache.frame_stride=4", "cache.action_horizon=32", "model.action_horizon=32", "cache.vae.base_dim=96",
                  "cache.vae.dim_mult=[1,2,4,4]", "cache.vae.num_res_blocks=2", "cache.encode_batch_size=1"]


class PeakMemory:
    """Samples the summed RSS of this process and every Ray worker every 0.2 s."""

    def __init__(self):
        self.peak, self._stop = 0, threading.Event()

    def _rss(self) -> int:
        total = psutil.Process().memory_info().rss
        for proc in psutil.process_iter(["cmdline"]):
            try:
                if proc.info["cmdline"] and proc.info["cmdline"][0].startswith("ray::"):
                    total += proc.memory_info().rss
            except psutil.Error:
                pass
        return total

    def _loop(self):
        while not self._stop.wait(0.2):
            self.peak = max(self.peak, self._rss())

    def __enter__(self):
        self.peak = self._rss()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


@dataclass
class Phase:
    seconds: float
    samples: int
    peak_bytes: int
    cpu_seconds: float = float("nan")  # CPU time of the encoding process (all threads); load-independent
    stage_seconds: dict | None = None  # pipeline: task seconds per stage, summed over the shards' sidecars
    first_shard_s: float = float("nan")  # pipeline: submission to the first shard written

    @property
    def rate(self) -> float:
        return self.samples / self.seconds


def choose(cfg: Config, reader: LeRobotDataset, episodes: int) -> list[tuple[int, list[int]]]:
    """The benchmark's episodes, one shard group each (so the pipeline can overlap them)."""
    return [(i, [e.index]) for i, e in enumerate(reader.episodes[:episodes])]


def bench_pipeline(cfg, root, cameras, text_keys, todo, total) -> Phase:
    with tempfile.TemporaryDirectory() as out, PeakMemory() as mem:
        start, wall_start = time.perf_counter(), time.time()
        run_pipeline(cfg, root, Path(out), cameras, text_keys, todo, total)
        seconds = time.perf_counter() - start
        records = [json.loads(sidecar_path(Path(out), shard).read_text()) for shard, _ in todo]
        first = min((Path(out) / r["file"]).stat().st_mtime for r in records) - wall_start if records else float("nan")
    stages = {k: sum(r["timings"][k] for r in records) for k in records[0]["timings"]} if records else {}
    return Phase(seconds, total, mem.peak, stage_seconds=stages, first_shard_s=first)


def bench_naive(cfg, reader: LeRobotDataset, todo) -> Phase:
    """The plain way: every sample decodes its own frames and is encoded alone."""
    from model.vae import build_vae, encode

    geom, c = ClipGeometry.from_config(cfg.cache), cfg.cache
    torch.set_num_threads(os.cpu_count() or 1)
    with PeakMemory() as mem:
        start, cpu = time.perf_counter(), time.process_time()
        vae = build_vae(c.vae, "cpu", torch.float32)
        count = 0
        for _, episodes in todo:
            for index in episodes:
                episode = next(e for e in reader.episodes if e.index == index)
                plan = plan_episode(episode.length, geom)
                for frames in plan.video_index:
                    views = [resize(reader.read_images(episode, cam, frames), c.image_height, c.image_width)
                             for cam in reader.camera_keys]
                    clip = np.concatenate(views, axis=2)
                    encode(vae, clip_pixels(clip, np.arange(len(frames))[None]))
                    count += 1
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return Phase(seconds, count, mem.peak, cpu)


def bench_encode_only(cfg, spec: DecodeSpec, todo, threads: int, dtype: str = "") -> tuple[Phase, np.ndarray]:
    """VAE calls alone on clips decoded beforehand, in one actor configured like the pipeline's; and the latents."""
    import ray

    rows = [DecodeGroup(spec)({"shard": s, "episodes": eps}) for s, eps in todo]
    encode = EncodeSpec(cfg.cache.vae, "cpu", dtype or cfg.cache.dtype, cfg.cache.encode_batch_size, threads)

    @ray.remote(num_cpus=1)
    class Timed(VaeEncoder):
        def time_encode(self, rows) -> tuple[float, float, np.ndarray]:
            start, cpu = time.perf_counter(), time.process_time()
            latents = [self.encode_clips(row["frames"], row["clip_index"]) for row in rows]
            return time.perf_counter() - start, time.process_time() - cpu, np.concatenate(latents)

    with PeakMemory() as mem:
        actor = Timed.remote(encode)
        seconds, cpu, latents = ray.get(actor.time_encode.remote(rows))
        ray.kill(actor)
    return Phase(seconds, sum(len(r["clip_index"]) for r in rows), mem.peak, cpu), latents


def open_dataset(overrides: list[str], workdir: str):
    """The config, the demo dataset (recorded on first use), its reader, clip geometry and text embeddings."""
    cfg = load_config([f"workdir={workdir}", *overrides])[0]
    root = dataset_root(cfg)
    reader = LeRobotDataset(root, cameras=cfg.data.cameras or None)
    text_keys = ensure_text_embeddings(cfg.cache.text, reader.tasks, Path(tempfile.mkdtemp()),
                                       text_identity(cfg.cache.text))
    return cfg, root, reader, ClipGeometry.from_config(cfg.cache), text_keys


def run_geometry(name: str, overrides: list[str], episodes: int, workdir: str, bf16: bool = False) -> dict:
    cfg, root, reader, geom, text_keys = open_dataset(overrides, workdir)
    todo = choose(cfg, reader, episodes)
    total = sum(samples_in(reader.episodes[i].length, geom) for i, _ in todo)
    spec = DecodeSpec(str(root), reader.camera_keys, cfg.data.state_key, cfg.data.action_key, geom,
                      cfg.cache.image_height, cfg.cache.image_width, text_keys)
    console.print(f"[bold]{name}[/]: {len(todo)} episodes, {total} samples, "
                  f"{cfg.cache.image_height}x{cfg.cache.image_width * len(reader.camera_keys)}, "
                  f"{cfg.cache.num_frames} frames")
    threads = cfg.cache.encode_threads or os.cpu_count() or 1
    results = {"pipeline": bench_pipeline(cfg, root, reader.camera_keys, text_keys, todo, total)}
    results["encode only"], fp32 = bench_encode_only(cfg, spec, todo, threads)
    results["naive loop"] = bench_naive(cfg, reader, todo)
    run = {"cfg": cfg, "samples": total, "results": results}
    if bf16:
        results["encode only, bf16"], low = bench_encode_only(cfg, spec, todo, threads, "bfloat16")
        run["bf16_max_abs"] = float(np.abs(low - fp32).max())
        run["bf16_rel_rms"] = float(np.sqrt(((low - fp32) ** 2).mean() / (fp32 ** 2).mean()))
    for key, phase in results.items():
        console.print(f"  {key}: {phase.samples} samples in {phase.seconds:.1f}s")
    return run


def run_scaling(episodes: int, factor: int, workdir: str) -> list[tuple[int, Phase]]:
    """The production pipeline on `episodes` and on `factor` x `episodes` demo episodes, shards as in a real build."""
    cfg, root, reader, geom, text_keys = open_dataset([], workdir)
    if len(reader.episodes) < episodes * factor:
        raise SystemExit(f"--scale {factor}: the demo dataset has {len(reader.episodes)} episodes, "
                         f"{episodes * factor} needed; lower --demo-episodes or raise demo.episodes_per_task")
    out = []
    for count in (episodes, episodes * factor):
        lengths = {e.index: e.length for e in reader.episodes[:count]}
        todo = list(enumerate(group_episodes(lengths, geom, cfg.cache.samples_per_shard)))
        total = sum(samples_in(n, geom) for n in lengths.values())
        phase = bench_pipeline(cfg, root, reader.camera_keys, text_keys, todo, total)
        console.print(f"  scaling: {count} episodes, {len(todo)} shards, {total} samples in {phase.seconds:.1f}s")
        out.append((count, phase))
    return out


def report_scaling(rows: list[tuple[int, Phase]]) -> None:
    (n0, base), (n1, big) = rows
    table = Table(title=f"offline cache scaling (demo geometry, {n1 // n0}x the episodes)")
    for col in ("episodes", "samples", "seconds", "samples/s", "peak GiB", "time ratio", "data ratio", "peak ratio"):
        table.add_column(col, justify="right")
    for n, phase in rows:
        table.add_row(str(n), str(phase.samples), f"{phase.seconds:.1f}", f"{phase.rate:.2f}",
                      f"{phase.peak_bytes / 2**30:.2f}", f"{phase.seconds / base.seconds:.2f}x",
                      f"{phase.samples / base.samples:.2f}x", f"{phase.peak_bytes / base.peak_bytes:.2f}x")
    Console(width=120).print(table)


def report(runs: dict[str, dict]) -> None:
    table = Table(title="offline cache throughput")
    for col in ("geometry", "samples", "pipeline/s", "naive/s", "encode/s", "vs naive", "overhead", "s/clip",
                "CPU s/clip enc/naive", "peak GiB pipe/naive"):
        table.add_column(col, justify="right")
    for name, run in runs.items():
        r = run["results"]
        p, n, e = r["pipeline"], r["naive loop"], r["encode only"]
        table.add_row(name, str(run["samples"]), f"{p.rate:.3f}", f"{n.rate:.3f}", f"{e.rate:.3f}",
                      f"{p.rate / n.rate:.2f}x", f"{p.seconds / e.seconds - 1:+.0%}", f"{p.seconds / p.samples:.2f}",
                      f"{e.cpu_seconds / e.samples:.2f} / {n.cpu_seconds / n.samples:.2f}",
                      f"{p.peak_bytes / 2**30:.2f} / {n.peak_bytes / 2**30:.2f}")
    Console(width=120).print(table)  # "overhead": pipeline time over encode-only time
    for name, run in runs.items():
        p = run["results"]["pipeline"]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in (p.stage_seconds or {}).items())
        console.print(f"{name}: pipeline wall {p.seconds:.1f} s, first shard after {p.first_shard_s:.1f} s; "
                      f"task seconds inside it: {stages}")
        if "bf16_max_abs" in run:
            e, b = run["results"]["encode only"], run["results"]["encode only, bf16"]
            console.print(f"{name}: encode only in bf16 {b.seconds / b.samples:.2f} s/clip against fp32 "
                          f"{e.seconds / e.samples:.2f} ({b.seconds / e.seconds:.2f}x time, peak "
                          f"{b.peak_bytes / 2**30:.2f} vs {e.peak_bytes / 2**30:.2f} GiB); latents vs fp32: max |diff| "
                          f"{run['bf16_max_abs']:.3f}, relative RMS {run['bf16_rel_rms']:.2%} ({bf16_support('cpu')[1]})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--geometry", choices=["demo", "paper", "both", "none"], default="both")
    parser.add_argument("--demo-episodes", type=int, default=4)
    parser.add_argument("--paper-samples", type=int, default=3, help="one episode, sampled this many times")
    parser.add_argument("--workdir", default="work")
    parser.add_argument("--scale", type=int, default=0, help="also time K x --demo-episodes against --demo-episodes")
    parser.add_argument("--bf16", action="store_true", help="also encode in bfloat16: time and latent error vs fp32")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    from cluster.config import ClusterConfig
    from cluster.ray_session import ray_session

    runs, scaling = {}, []
    with ray_session(ClusterConfig()):
        if args.scale:
            scaling = run_scaling(args.demo_episodes, args.scale, args.workdir)
        if args.geometry in ("demo", "both"):
            runs["demo"] = run_geometry("demo", [], args.demo_episodes, args.workdir, args.bf16)
        if args.geometry in ("paper", "both"):
            cfg = load_config([f"workdir={args.workdir}"])[0]
            length = LeRobotDataset(dataset_root(cfg)).episodes[0].length
            stride = -(-length // args.paper_samples)  # ceil: exactly paper_samples samples
            runs["paper 224x448"] = run_geometry("paper", PAPER_GEOMETRY + [f"cache.sample_stride={stride}"], 1,
                                                 args.workdir, args.bf16)
    console.print(f"machine: {machine.describe(torch.get_num_threads())}, "
                  f"{psutil.virtual_memory().total / 2**30:.0f} GiB")
    if runs:
        report(runs)
    if scaling:
        report_scaling(scaling)


if __name__ == "__main__":
    main()
