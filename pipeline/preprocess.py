"""`python -m pipeline.preprocess [overrides]`: LeRobot dataset -> validated latent cache.

Ray Data pipeline, one row per shard group (a few whole episodes):
  plan (driver) -> decode (tasks) -> VAE encode (actor pool) -> downsample -> write shard (tasks)
Text embeddings (one per distinct task) are computed before, in the driver.
The cache directory is `<cache root>/<fingerprint>/`; a group whose shard and
sidecar exist is not redone, and `manifest.json` is written last, so a re-run
after a crash redoes only missing shards and a re-run after success is a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from model.vae import compression
from pipeline.cli import parse_or_exit, to_flat_dict
from pipeline.config import Config
from pipeline.console import console
from pipeline.logged_progress import LoggedProgress
from pipeline.pretrained import resolve_config_paths
from pipeline.workdir import cache_root, demo_dataset_dir
from stages.build_time import built_at, reused_message
from stages.cache_loader import CacheHandle, open_cache
from stages.manifest import (
    MANIFEST,
    ManifestError,
    derivable,
    fingerprint,
    identify,
    merge_stats,
    read_manifest,
    validate_shards,
)
from stages.plan import ClipGeometry, group_episodes, samples_in
from stages.shards import shard_name, sidecar_path, write_json_atomic


# Ray Data calls the encoder on a thread of its own; glibc gives such a thread its own arena, whose
# 64 MiB heaps cannot hold the VAE's large activations, so each would be a fresh mmap and page faults
# (a paper-size clip: ~45 instead of ~27 s). One arena, set before the process starts, avoids that.
ENCODER_ENV = {"MALLOC_ARENA_MAX": "1"}


@dataclass
class PreprocessResult:
    cache_dir: Path
    fingerprint: str
    manifest: dict | None  # None when the run failed (too many rejects)
    ok: bool
    message: str
    skipped: bool = False  # the cache was already complete
    identity: dict | None = None  # what training opens the cache by (`open_built`)

    def open(self) -> CacheHandle:
        """The cache training reads: the one just built or found, by the identity computed here."""
        if not self.ok or self.identity is None:
            raise ValueError(f"the cache at {self.cache_dir} is not usable: {self.message}")
        return open_cache(self.cache_dir.parent, self.identity)


def dataset_root(cfg: Config) -> Path:
    """The LeRobot dataset the config names: `data.path`, or the embedded demo (recorded on first use)."""
    if cfg.data.path:
        return Path(cfg.data.path).expanduser().resolve()
    from sim.demos import ensure_demo_dataset

    return ensure_demo_dataset(cfg.demo, demo_dataset_dir(cfg), progress_cls=LoggedProgress)


def open_reader(cfg: Config, root: Path | None = None):
    from stages.lerobot import LeRobotDataset

    return LeRobotDataset(root or dataset_root(cfg), cameras=cfg.data.cameras or None,
                          state_key=cfg.data.state_key, action_key=cfg.data.action_key)


def open_cache_for(cfg: Config) -> CacheHandle:
    """The existing cache `cfg` asks for (training alone, evaluation, benchmarks); builds nothing."""
    return open_cache(cache_root(cfg), identify(cfg.cache, cfg.data, open_reader(cfg)))


def run_pipeline(cfg: Config, root: Path, cache_dir: Path, cameras: list[str], text_keys: dict,
                  todo: list[tuple[int, list[int]]], total_samples: int) -> None:
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    from stages.decode import DecodeGroup, DecodeSpec
    from stages.downsample import Downsample
    from stages.encode import EncodeSpec, VaeEncoder
    from stages.shards import WriteShard

    c = cfg.cache
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the rich display below is the progress
    ctx.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.ERROR)

    gpus = int(ray.cluster_resources().get("GPU", 0))
    use_gpu = gpus > 0 and c.device in ("auto", "cuda")
    actors = min(c.encode_actors, gpus) if use_gpu else max(1, c.encode_actors)
    threads = c.encode_threads or max(1, int(ray.cluster_resources().get("CPU", 1)) // actors)
    decode = DecodeSpec(str(root), cameras, cfg.data.state_key, cfg.data.action_key,
                        ClipGeometry.from_config(c), c.image_height, c.image_width, text_keys)
    encode = EncodeSpec(c.vae, "cuda" if use_gpu else "cpu", c.dtype, c.encode_batch_size, 0 if use_gpu else threads,
                        c.current_frames)

    ds = ray.data.from_items([{"shard": s, "episodes": eps} for s, eps in todo], override_num_blocks=len(todo))
    ds = ds.map(DecodeGroup(decode), num_cpus=1)
    ds = ds.map_batches(VaeEncoder, fn_constructor_args=(encode,), batch_size=1,
                        compute=ActorPoolStrategy(size=actors), num_gpus=1 if use_gpu else 0, num_cpus=1,
                        runtime_env={"env_vars": ENCODER_ENV})
    ds = ds.map(Downsample(c.latent_downsample), num_cpus=0.5)
    ds = ds.map(WriteShard(str(cache_dir)), num_cpus=0.5)

    columns = [TextColumn("[bold]cache"), BarColumn(), MofNCompleteColumn(), TextColumn("samples"),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn()]
    with LoggedProgress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("cache", total=total_samples, rate="")
        start = time.perf_counter()
        for row in ds.iter_rows():
            record = json.loads(row["record"])
            progress.advance(task, record["samples"])
            done = progress.tasks[0].completed
            progress.update(task, rate=f"{done / max(time.perf_counter() - start, 1e-9):.2f} samples/s")


def _collect(cache_dir: Path, groups: list[list[int]]) -> list[dict]:
    return [json.loads(sidecar_path(cache_dir, i).read_text()) for i in range(len(groups))]


def _build_manifest(cfg: Config, identity: dict, fp: str, episodes: int, records: list[dict], text_keys: dict,
                    timings: dict, latent_hw: tuple[int, int]) -> dict:
    shards = [{k: r[k] for k in ("file", "samples", "bytes", "sha256")} for r in records if r["samples"]]
    files: dict[str, str] = {}
    for r in records:
        files.update(r["decoders"])
    stage_seconds = Counter()
    for r in records:
        stage_seconds.update(r["timings"])
    return {
        "schema": identity["schema"],
        "fingerprint": fp,
        "identity": identity,
        "config": {k: v for k, v in to_flat_dict(cfg).items() if k.startswith(("preset", "data.", "cache."))},
        "vae": identity["cache.vae"],
        "text_encoder": identity["cache.text"],
        "episodes": episodes,
        "samples": sum(s["samples"] for s in shards),
        "shards": shards,
        "stats": merge_stats([r["stats"] for r in records]),
        "rejected": [rej for r in records for rej in r["rejects"]],
        "decoders": dict(Counter(files.values())),
        "text_keys": text_keys,
        "derivable": derivable(identity, *latent_hw),
        "latent_shape": {"current": list(latent_hw), "video": [latent_hw[0] // cfg.cache.latent_downsample,
                                                              latent_hw[1] // cfg.cache.latent_downsample]},
        "timings": {"stage_seconds": dict(stage_seconds), **timings},
        "nodes": {r["file"]: r.get("nodes", {}) for r in records},  # Ray node per stage (provenance only)
    }


def _too_many_rejects(rejected: list[dict], episodes: int, limit: float) -> str:
    fraction = len(rejected) / max(episodes, 1)
    if fraction <= limit:
        return ""
    reasons = "".join(f"\n  episode {r['episode']}: {r['reason']}" for r in rejected)
    return (f"{len(rejected)} of {episodes} episodes rejected ({fraction:.0%} > cache.max_reject_fraction="
            f"{limit:.0%}){reasons}")


def preprocess(cfg: Config) -> PreprocessResult:
    from cluster.ray_session import ray_session
    from stages.lerobot_audit import audit
    from stages.text import ensure_text_embeddings

    t0 = time.perf_counter()
    resolve_config_paths(cfg)  # models:/ URIs -> local diffusers directories
    root = dataset_root(cfg)
    reader = open_reader(cfg, root)
    unlisted = audit(reader)  # whole-dataset checks, before any model or Ray work
    early = _too_many_rejects(unlisted, len(reader.episodes) + len(unlisted), cfg.cache.max_reject_fraction)
    if early:
        return PreprocessResult(cache_root(cfg), "", None, False, early + "; nothing was built")
    geom = ClipGeometry.from_config(cfg.cache)
    identity = identify(cfg.cache, cfg.data, reader)
    fp = fingerprint(identity)
    cache_dir = cache_root(cfg) / fp
    try:
        manifest = read_manifest(cache_dir)
        validate_shards(cache_dir, manifest)
        error = _too_many_rejects(manifest["rejected"], manifest["episodes"], cfg.cache.max_reject_fraction)
        return PreprocessResult(cache_dir, fp, manifest, not error, error or reused_message(manifest),
                                skipped=True, identity=identity)
    except ManifestError:
        pass

    cache_dir.mkdir(parents=True, exist_ok=True)
    for stale in cache_dir.rglob("*.tmp-*"):  # leftovers of a killed run
        stale.unlink()
    t_identity = time.perf_counter()
    text_keys = ensure_text_embeddings(cfg.cache.text, [e.task for e in reader.episodes], cache_dir,
                                       identity["cache.text"])
    t_text = time.perf_counter()

    lengths = {e.index: e.length for e in reader.episodes}
    groups = group_episodes(lengths, geom, cfg.cache.samples_per_shard)
    done = {i for i in range(len(groups))
            if sidecar_path(cache_dir, i).exists() and (cache_dir / shard_name(i)).exists()}
    todo = [(i, g) for i, g in enumerate(groups) if i not in done]
    todo_samples = sum(samples_in(lengths[e], geom) for _, g in todo for e in g)
    console.print(f"cache {cache_dir}: {len(reader.episodes)} episodes, {len(groups)} shards "
                  f"({len(done)} already written), {todo_samples} samples to encode")
    if todo:
        with ray_session(cfg.cluster):
            run_pipeline(cfg, root, cache_dir, reader.camera_keys, text_keys, todo, todo_samples)
    t_pipeline = time.perf_counter()

    records = _collect(cache_dir, groups)
    rejected = unlisted + [rej for r in records for rej in r["rejects"]]
    error = _too_many_rejects(rejected, len(reader.episodes) + len(unlisted), cfg.cache.max_reject_fraction)
    if error:
        return PreprocessResult(cache_dir, fp, None, False, error + "; no manifest written")
    spatial = compression(identity["cache.vae"]["config"])[1]
    h8, w8 = cfg.cache.image_height // spatial, cfg.cache.image_width * len(reader.camera_keys) // spatial
    timings = {"identity_s": t_identity - t0, "text_s": t_text - t_identity, "pipeline_s": t_pipeline - t_text,
               "total_s": time.perf_counter() - t0}
    manifest = _build_manifest(cfg, identity, fp, len(reader.episodes), records, text_keys, timings, (h8, w8))
    manifest.update(episodes=manifest["episodes"] + len(unlisted), rejected=unlisted + manifest["rejected"],
                    built_at=built_at())
    write_json_atomic(cache_dir / MANIFEST, manifest)
    return PreprocessResult(cache_dir, fp, manifest, True, f"cache written in {timings['total_s']:.1f}s",
                            identity=identity)


def ensure_cache(cfg: Config) -> CacheHandle:
    """Build (or find) the cache `cfg` asks for inside the caller's Ray session, and open it; exit if it failed."""
    built = preprocess(cfg)  # a no-op when the cache for this config exists
    if not built.ok:
        raise SystemExit(f"offline cache failed: {built.message}")
    return built.open()


def print_summary(result: PreprocessResult) -> None:
    m = result.manifest
    table = Table(title="offline cache", show_header=False)
    table.add_row("cache", str(result.cache_dir))
    table.add_row("fingerprint", result.fingerprint)
    if m:
        if result.skipped:
            table.add_row("built", m.get("built_at", "earlier (time not recorded)"))
        table.add_row("samples", str(m["samples"]))
        table.add_row("shards", f"{len(m['shards'])} ({sum(s['bytes'] for s in m['shards']) / 1e6:.1f} MB)")
        table.add_row("rejected episodes", "; ".join(f"{r['episode']}: {r['reason']}" for r in m["rejected"])
                      or "none")
        table.add_row("video files per decoder", ", ".join(f"{k}={v}" for k, v in m["decoders"].items()) or "-")
        secs = m["timings"]["stage_seconds"]
        when = " at build" if result.skipped else ""  # a reused cache's timings are not this run's
        table.add_row(f"time per stage{when} (task s)", ", ".join(f"{k} {v:.1f}" for k, v in secs.items()))
        table.add_row(f"wall time{when} (s)", ", ".join(f"{k[:-2]} {v:.1f}" for k, v in m["timings"].items()
                                                 if k.endswith("_s")))
    console.print(table)
    console.print(("[green]" if result.ok else "[red]") + result.message)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_or_exit(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from stages.lerobot import DatasetError

    try:
        result = preprocess(cfg)
    except (DatasetError, FileNotFoundError, ValueError) as err:  # the dataset cannot be opened at all
        console.print(f"[red]preprocess failed: {err}")
        return 1
    print_summary(result)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
