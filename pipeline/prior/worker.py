"""The loop each Ray Train worker runs for `pipeline.prior.pretrain`: DDP on the video objective alone.

The pieces are Light-WAM training's (`train_data.batches`, the optimizer and
schedule of `train_state`, checkpoint files `train_resume` recognises); the
model is `model.video_prior.VideoPrior` and the held-out shards give rank 0 a
validation video loss with fixed noise draws, and the pictures.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from pathlib import Path

import ray.train
import ray.train.torch
import torch
from safetensors.torch import load_file, save_file

from model.video_prior import VideoPrior
from pipeline.prior.pictures import future_frames_figure
from pipeline.run_logger import RunLogger
from pipeline.train.data import batches, split_cache
from pipeline.train.resume import restored_checkpoint
from pipeline.train.state import (
    load_optimizer,
    make_optimizer,
    make_scheduler,
    save_optimizer,
)
from pipeline.train.step import DDP_KWARGS
from pipeline.train.worker import mean_across_ranks


@torch.no_grad()
def validation_loss(prior: VideoPrior, val_batches: list[dict]) -> float:
    """Mean video loss over the held-out batches, each with its own fixed noise draw."""
    prior.eval()
    losses = [float(prior(b, torch.Generator(device=b["video_latents"].device).manual_seed(i)))
              for i, b in enumerate(val_batches)]
    prior.train()
    return sum(losses) / len(losses)


def _save(directory: Path, prior: VideoPrior, opt, step: int) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in prior.dit.state_dict().items()},
              str(directory / "model.safetensors"))
    save_optimizer(opt, directory)
    (directory / "train_state.json").write_text(json.dumps({"step": step}))


def pretrain_loop_per_worker(config: dict) -> None:
    cfg, pc = config["cfg"], config["cfg"].pretrain
    tc = dataclasses.replace(cfg.train, steps=pc.steps)
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    device = ray.train.torch.get_device()
    torch.set_num_threads(max(1, config.get("threads_per_worker", 1)))
    torch.manual_seed(tc.seed)

    prior = VideoPrior(cfg.model.backbone, cfg.model.flow_shift).to(device)
    prior.backbone.checkpoint_blocks = tc.checkpoint_blocks
    prior.backbone.full_recompute_blocks = tc.full_recompute_blocks
    params = [p for p in prior.parameters() if p.requires_grad]
    opt = make_optimizer(params, tc)
    step = 0
    restored = restored_checkpoint(config)  # Ray Train's, or the driver's recovered one (pipeline.train.resume)
    if restored:
        with restored.as_directory() as d:
            prior.dit.load_state_dict(load_file(str(Path(d) / "model.safetensors")))
            load_optimizer(opt, Path(d))
            step = json.loads((Path(d) / "train_state.json").read_text())["step"]
    ddp = ray.train.torch.prepare_model(prior, parallel_strategy_kwargs=DDP_KWARGS)
    sched = make_scheduler(opt, tc, step)

    train_cache, val_cache = split_cache(config["cache"], pc.heldout_shards, "pretrain.heldout_shards")
    data = batches(cfg, train_cache, rank, world, skip=step * tc.batch_size, device=device)
    logger = RunLogger(config["tracking_uri"], config["mlflow_run_id"]) if rank == 0 else None
    val = []
    if rank == 0:
        val_data = batches(cfg, val_cache, 0, 1, device=device)
        val = [next(val_data) for _ in range(pc.val_batches)]
        print(f"pretrain: rank 0/{world}: starting at step {step} of {tc.steps} on {device}", flush=True)
        if step > 0:
            logger.metrics({"resumed_from_step": step}, step)
        else:
            logger.metrics({"val_video_loss": validation_loss(prior, val)}, 0)

    window_start, window_samples = time.perf_counter(), 0
    metrics: dict[str, float] = {}
    while step < tc.steps:
        prior.train()
        loss = ddp(next(data))
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, tc.grad_clip))
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        window_samples += tc.batch_size * world
        last = step == tc.steps
        if step % tc.log_every == 0 or last:
            metrics = mean_across_ranks({"video_loss": float(loss.detach())}, device)
            metrics["loss"] = metrics["video_loss"]  # what the driver's progress bar shows
            elapsed = time.perf_counter() - window_start
            metrics.update(lr=sched.get_last_lr()[0], grad_norm=grad_norm, step=step,
                           samples_per_s=window_samples / max(elapsed, 1e-9))
            window_start, window_samples = time.perf_counter(), 0
        if rank == 0 and (step % pc.val_every == 0 or last):
            metrics["val_video_loss"] = validation_loss(prior, val)
        if logger and (step % tc.log_every == 0 or last or "val_video_loss" in metrics):
            logger.metrics(metrics, step)
            print(f"pretrain: step {step}/{tc.steps} video loss {metrics.get('video_loss', float('nan')):.4f} "
                  f"val {metrics.get('val_video_loss', float('nan')):.4f} "
                  f"{metrics.get('samples_per_s', 0):.1f} samples/s", flush=True)
        if logger and last and pc.picture_clips > 0:
            clips = {k: v[:pc.picture_clips] for k, v in val[0].items()}
            predicted = prior.sample_future(clips, pc.sample_steps, torch.Generator(device=device).manual_seed(0))
            logger.client.log_figure(logger.run_id, future_frames_figure(cfg.cache.vae, clips, predicted),
                                     f"pictures/future_frames_step{step:06d}.png")
        if step % tc.checkpoint_every == 0 or last:
            with tempfile.TemporaryDirectory() as tmp:
                checkpoint = None
                if rank == 0:
                    _save(Path(tmp), prior, opt, step)
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
                ray.train.report({"step": step, **metrics}, checkpoint=checkpoint)
        metrics.pop("val_video_loss", None)
