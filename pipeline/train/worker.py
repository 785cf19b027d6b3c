"""The loop each Ray Train worker runs: DDP co-training from the shard cache.

Knows Ray Train (context, checkpoints, report) and the model's public API;
nothing of MLflow beyond the rank-0 `RunLogger` it is handed.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from safetensors.torch import load_file

from model.checkpoint import load_trainable_state, save_checkpoint
from model.light_wam import build_model
from pipeline.config import Config
from pipeline.run_logger import RunLogger
from pipeline.train import allocator
from pipeline.train.data import batches, split_cache
from pipeline.train.resume import restored_checkpoint
from pipeline.train.state import (
    load_optimizer,
    make_optimizer,
    make_scheduler,
    save_optimizer,
)
from pipeline.train.step import DDP_KWARGS, accumulate_gradients

MALLOC_TAG = "lightwam.worker_malloc"


def mean_across_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    if not (dist.is_available() and dist.is_initialized()):
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= dist.get_world_size()
    return dict(zip(values, t.tolist()))


def _replica_spread(params: list[torch.nn.Parameter], device: torch.device) -> float:
    """Largest difference between ranks of a per-parameter checksum: 0 when DDP keeps replicas identical."""
    if not (dist.is_available() and dist.is_initialized()):
        return 0.0
    mine = torch.stack([p.detach().double().sum() for p in params]).to(device)
    every = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(every, mine)
    stacked = torch.stack(every)
    return float((stacked.max(0).values - stacked.min(0).values).abs().max())


def _save(directory: Path, model, opt, step: int, samples_per_rank: int, cfg_yaml: str) -> None:
    save_checkpoint(model, directory / "model.safetensors", {"step": str(step)})
    save_optimizer(opt, directory)
    (directory / "train_state.json").write_text(json.dumps({"step": step, "samples_per_rank": samples_per_rank}))
    (directory / "config.yaml").write_text(cfg_yaml)


def validation_batches(cfg: Config, cache, device) -> list[dict[str, torch.Tensor]]:
    """The held-out batches, read once in file order (the same ones at every validation)."""
    data = batches(cfg, cache, 0, 1, device=device)
    return [next(data) for _ in range(cfg.train.val_batches)]


@torch.no_grad()
def validation_losses(model, val: list[dict[str, torch.Tensor]]) -> dict[str, float]:
    """Mean losses over the held-out batches, each with its own fixed noise draw: `val_loss`, `val_*_loss`."""
    model.eval()
    sums: dict[str, float] = {}
    for i, batch in enumerate(val):
        gen = torch.Generator(device=batch["proprio"].device).manual_seed(i)
        for key, value in model(batch, gen).items():
            sums[f"val_{key}"] = sums.get(f"val_{key}", 0.0) + float(value) / len(val)
    model.train()
    return sums


def train_loop_per_worker(config: dict) -> None:
    cfg: Config = config["cfg"]
    tc = cfg.train
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, config.get("threads_per_worker", 1)))
    torch.manual_seed(tc.seed)  # identical init on every rank; DDP also broadcasts rank 0's

    # 1. model, restored from the latest checkpoint when resuming (a worker died, or the same run re-ran)
    cfg.model.device = str(device)
    model = build_model(cfg.model)
    model.backbone.checkpoint_blocks = tc.checkpoint_blocks
    model.backbone.full_recompute_blocks = tc.full_recompute_blocks
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, tc)
    step = 0
    restored = restored_checkpoint(config)  # Ray Train's, or the driver's recovered one (pipeline.train.resume)
    if restored:
        with restored.as_directory() as d:
            load_trainable_state(model, load_file(str(Path(d) / "model.safetensors")))
            load_optimizer(opt, Path(d))
            # the data position is re-derived from the step, so a different worker count resumes too
            step = json.loads((Path(d) / "train_state.json").read_text())["step"]
    ddp = ray.train.torch.prepare_model(model, parallel_strategy_kwargs=DDP_KWARGS)
    sched = make_scheduler(opt, tc, step)

    # 2. data: this rank's part of the shards, positioned after what earlier steps consumed
    per_step = tc.batch_size * tc.grad_accum
    samples_per_rank = step * per_step
    train_cache, val_cache = split_cache(config["cache"], tc.heldout_shards)
    data = batches(cfg, train_cache, rank, world, skip=samples_per_rank, device=device)
    val = validation_batches(cfg, val_cache, device) if rank == 0 and tc.heldout_shards else []
    logger = RunLogger(config["tracking_uri"], config["mlflow_run_id"]) if rank == 0 and config.get("mlflow_run_id") else None
    if rank == 0:
        print(f"train: rank 0/{world}: starting at step {step} of {tc.steps} on {device}, malloc {allocator.active()}",
              flush=True)
        if logger:
            logger.tag(MALLOC_TAG, allocator.active())
        if logger and step > 0:
            logger.metrics({"resumed_from_step": step}, step)

    # 3. the loop
    window_start, window_samples = time.perf_counter(), 0
    metrics: dict[str, float] = {}
    while step < tc.steps:
        model.train()
        micro_batches = [next(data) for _ in range(tc.grad_accum)]
        totals = accumulate_gradients(ddp, micro_batches, cfg.model, tc.separate_branch_passes, device,
                                      tc.precision)
        batch = micro_batches[-1]
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tc.grad_clip))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        samples_per_rank += per_step
        window_samples += per_step * world

        last = step == tc.steps
        if step % tc.log_every == 0 or last:
            metrics = mean_across_ranks(totals, device)
            elapsed = time.perf_counter() - window_start
            metrics.update(lr=sched.get_last_lr()[0], grad_norm=grad_norm, samples_per_s=window_samples / max(elapsed, 1e-9),
                           replica_spread=_replica_spread(params, device), step=step)
            window_start, window_samples = time.perf_counter(), 0
            if logger:
                logger.metrics(metrics, step)
                print(f"train: step {step}/{tc.steps} loss {metrics['loss']:.4f} "
                      f"(video {metrics.get('video_loss', float('nan')):.4f}, "
                      f"action {metrics.get('action_loss', float('nan')):.4f}) "
                      f"{metrics['samples_per_s']:.1f} samples/s", flush=True)
        if val and (step % tc.checkpoint_every == 0 or last):
            metrics.update(validation_losses(model, val))
            if logger:
                logger.metrics({k: v for k, v in metrics.items() if k.startswith("val_")}, step)
        if logger and (step % tc.plot_every == 0 or last):
            logger.plots(model, batch, step)
        if step % tc.checkpoint_every == 0 or last:
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = None
                if rank == 0:
                    _save(Path(tmp), model, opt, step, samples_per_rank, config["cfg_yaml"])
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report({"step": step, **metrics}, checkpoint=checkpoint)
