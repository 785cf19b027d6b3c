"""Training throughput: the offline cache and the latent downsample, measured side by side.

Part A (demo preset, one process, the same real clips in every arm): samples/s
of a full co-training step (forward, backward, AdamW) when the clip is
VAE-encoded in the loop against read from cached latents, and with the video
latents 2x2-downsampled against at full resolution. Decoding the mp4s is done
once beforehand and excluded from every arm, so the uncached arms are, if
anything, flattered.

Part B (random weights, DDP world size 1): time and peak memory of one training
step, each configuration in its own subprocess (the malloc is preloaded at its
start): the paper preset at batch 1, and the demo preset at its batch size by
malloc and precision (`train.precision=bf16`: autocast, fp32 weights and AdamW state).

    python -m benchmarks.train_throughput [--steps 4] [--skip-paper | --only-paper] [--rows 0 4] [--presets paper,demo]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

from benchmarks import machine


# ---------------------------------------------------------------- part A: cache and downsample
def real_clips(cfg, count: int) -> list[dict]:
    """`count` training samples of the demo dataset as pixels (decoded, resized, cameras joined)."""
    from model.pixels import resize
    from pipeline.preprocess import dataset_root
    from stages.decode import clip_pixels
    from stages.lerobot import LeRobotDataset
    from stages.plan import ClipGeometry, plan_episode

    reader = LeRobotDataset(dataset_root(cfg))
    geom, c = ClipGeometry.from_config(cfg.cache), cfg.cache
    samples = []
    for episode in reader.episodes:
        plan = plan_episode(episode.length, geom)
        frames = reader.frames(episode)
        needed = plan.needed_frames
        views = [resize(reader.read_images(episode, cam, needed), c.image_height, c.image_width) for cam in reader.camera_keys]
        joined = np.concatenate(views, axis=2)
        lookup = {int(f): i for i, f in enumerate(needed)}
        for s in range(len(plan.starts)):
            clip_index = np.array([[lookup[int(f)] for f in plan.video_index[s]]])
            samples.append({
                "pixels": clip_pixels(joined, clip_index)[0],  # [3, n, H, W]
                "proprio": torch.from_numpy(frames.state[plan.starts[s]]),
                "actions": torch.from_numpy(frames.action[plan.action_index[s]]),
                "action_mask": torch.from_numpy(plan.action_mask[s]),
                "video_pad": plan.video_pad[s],
            })
            if len(samples) == count:
                return samples
    return samples


def latents_of(vae, pixels: torch.Tensor, pad: np.ndarray, factor: int) -> dict:
    """What the cache stores for a batch of clips: pooled clip, current-frame latent, frame mask."""
    from model.vae import encode
    from stages.downsample import latent_frame_mask, pool_latents

    clip = encode(vae, pixels)  # [B, z, F, h, w]
    current = encode(vae, pixels[:, :, :1])
    video = torch.as_tensor(pool_latents(clip.numpy(), factor)) if factor > 1 else clip
    return {"video_latents": video, "current_latent": current,
            "video_frame_mask": torch.as_tensor(np.stack([latent_frame_mask(p) for p in pad]))}


def batch_of(samples: list[dict], latents: dict, text: torch.Tensor) -> dict:
    b = len(samples)
    lo = torch.stack([s["actions"] for s in samples]).amin((0, 1))
    hi = torch.stack([s["actions"] for s in samples]).amax((0, 1))
    norm = lambda x: 2 * (x - lo) / (hi - lo).clamp(min=1e-6) - 1  # noqa: E731
    return {**latents, "text": text.expand(b, -1, -1), "proprio": torch.stack([s["proprio"] for s in samples]),
            "actions": norm(torch.stack([s["actions"] for s in samples])),
            "action_mask": torch.stack([s["action_mask"] for s in samples])}


def arm(cfg, batches: list[list[dict]], cached: bool, factor: int, steps: int) -> float:
    """Samples/s of `steps` training steps (after one warm-up)."""
    from model.light_wam import build_model
    from model.vae import build_vae
    from pipeline.train.state import make_optimizer

    torch.manual_seed(0)
    model = build_model(cfg.model)
    opt = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg.train)
    vae = build_vae(cfg.cache.vae)
    text = torch.zeros(1, cfg.cache.text.max_tokens, cfg.cache.text.dim)
    pre = [latents_of(vae, torch.stack([s["pixels"] for s in b]), [s["video_pad"] for s in b], factor) for b in batches] \
        if cached else None
    times = []
    for i in range(steps + 1):
        samples = batches[i % len(batches)]
        start = time.perf_counter()
        lat = pre[i % len(batches)] if cached else latents_of(
            vae, torch.stack([s["pixels"] for s in samples]), [s["video_pad"] for s in samples], factor)
        out = model(batch_of(samples, lat, text))
        out["loss"].backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - start)
    return len(batches[0]) / statistics.median(times)


def part_a(steps: int) -> None:
    from pipeline.cli import load_config

    cfg = load_config(["workdir=work-bench", "demo.tasks=[reach-v3]", "demo.episodes_per_task=3"])[0]
    bs = cfg.train.batch_size
    samples = real_clips(cfg, bs * 2)
    batches = [samples[:bs], samples[bs:2 * bs]]
    rows = []
    for name, cached, factor in [("VAE in the loop, full-res video", False, 1),
                                 ("VAE in the loop, 2x2 downsampled", False, 2),
                                 ("cached latents, full-res video", True, 1),
                                 ("cached latents, 2x2 downsampled (Light-WAM)", True, 2)]:
        rows.append((name, arm(cfg, batches, cached, factor, steps)))
        print(f"  measured: {name}: {rows[-1][1]:.2f} samples/s", flush=True)
    r = dict(rows)
    h, w = cfg.cache.image_height, cfg.cache.image_width * 2
    print(f"\nPart A: demo preset, batch {bs}, clips {cfg.cache.num_frames}x{h}x{w}, {steps} timed steps per arm")
    print(f"machine: {machine.describe(torch.get_num_threads())}\n")
    print(f"| arm | samples/s | vs VAE in loop, full-res |\n|---|---|---|")
    base = rows[0][1]
    for name, sps in rows:
        print(f"| {name} | {sps:.2f} | {sps / base:.2f}x |")
    light = r["cached latents, 2x2 downsampled (Light-WAM)"]
    print(f"\nratios: cache {light / r['VAE in the loop, 2x2 downsampled']:.2f}x (paper 1.76x on GPUs); "
          f"downsample {light / r['cached latents, full-res video']:.2f}x; overall {light / base:.2f}x (paper 4.25x)")


# ---------------------------------------------------------------- part B: one paper-size step
@dataclass(frozen=True)
class StepSetup:
    """One row of part B: the memory levers of `train.*` as the workers apply them."""

    separate_passes: bool
    checkpoint_blocks: int  # -1 = all
    full_recompute_blocks: int
    allocator: str  # train.allocator value
    preset: str = "paper"
    precision: str = "fp32"  # train.precision value
    frozen_dtype: str | None = None  # model.backbone.frozen_dtype value; None = the preset's

    def label(self) -> str:
        if self.checkpoint_blocks == 0:
            ckpt = "none"
        elif self.checkpoint_blocks < 0 and self.full_recompute_blocks >= 30:
            ckpt = "every block, full recompute"
        else:
            ckpt = f"every block, cheap ops only ({self.full_recompute_blocks} first blocks full)"
        passes = 'video, then action' if self.separate_passes else 'one joint pass'
        frozen = f", frozen weights {self.frozen_dtype or 'as the model'}" if self.frozen_dtype is not None else ""
        return f"| {self.preset} | {passes} | {ckpt} | {self.allocator} | {self.precision}{frozen} |"


SETUPS = [
    StepSetup(False, 0, 0, "system"),  # the straightforward step
    StepSetup(False, -1, 99, "system"),  # per-block checkpointing, as the authors' code does
    StepSetup(True, 0, 0, "system"),
    StepSetup(True, 0, 0, "tcmalloc"),
    StepSetup(True, -1, 0, "tcmalloc"),
    StepSetup(True, -1, 4, "jemalloc"),
    StepSetup(True, -1, 4, "tcmalloc"),  # the defaults (train.allocator=auto where tcmalloc is installed)
    StepSetup(True, -1, 4, "mimalloc"),  # the defaults on a fresh machine (auto: the cmeel-mimalloc wheel)
    StepSetup(True, -1, 4, "mimalloc", precision="bf16"),
    StepSetup(True, -1, 4, "mimalloc", frozen_dtype=""),  # the paper defaults before frozen weights in bf16
    # the demo step (demo defaults: no checkpointing)
    StepSetup(True, 0, 0, "system", "demo"),
    StepSetup(True, 0, 0, "mimalloc", "demo"),
    StepSetup(True, 0, 0, "tcmalloc", "demo"),
    StepSetup(True, 0, 0, "system", "demo", "bf16"),
    StepSetup(True, 0, 0, "mimalloc", "demo", "bf16"),
]


def step_batch(cfg, batch_size: int) -> dict:
    """Random tensors with the shapes of a cached batch of `cfg`."""
    c, m = cfg.cache, cfg.model
    h, w, pool = c.image_height // 8, 2 * c.image_width // 8, c.latent_downsample
    frames = 1 + (c.num_frames - 1) // 4
    b = batch_size
    return {"video_latents": torch.randn(b, 16, frames, h // pool, w // pool),
            "video_frame_mask": torch.ones(b, frames, dtype=torch.bool),
            "current_latent": torch.randn(b, 16, 1, h, w), "text": torch.randn(b, c.text.max_tokens, c.text.dim),
            "proprio": torch.rand(b, m.proprio_dim) * 2 - 1, "actions": torch.rand(b, m.action_horizon, m.action_dim) * 2 - 1,
            "action_mask": torch.ones(b, m.action_horizon, dtype=torch.bool)}


def paper_step(setup: StepSetup) -> dict:
    """Three optimizer steps (paper; demo: eight) through the workers' own step code, DDP (gloo, world size 1)."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from model.light_wam import build_model
    from pipeline.cli import load_config
    from pipeline.config import Precision
    from pipeline.train import allocator
    from pipeline.train.state import make_optimizer
    from pipeline.train.step import DDP_KWARGS, accumulate_gradients

    if allocator.active() != setup.allocator:
        raise RuntimeError(f"asked for malloc {setup.allocator}, running on {allocator.active()}")
    torch.set_num_threads(os.cpu_count() or 1)
    cfg = load_config([f"preset={setup.preset}"])[0]
    if setup.frozen_dtype is not None:
        cfg.model.backbone.frozen_dtype = setup.frozen_dtype
    model = build_model(cfg.model, fast_init=True)
    model.backbone.checkpoint_blocks = setup.checkpoint_blocks
    model.backbone.full_recompute_blocks = setup.full_recompute_blocks
    params = [p for p in model.parameters() if p.requires_grad]
    opt = make_optimizer(params, cfg.train)
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    ddp = DistributedDataParallel(model, **DDP_KWARGS)
    # paper: 224x448 pixels -> 28x56 latents; the clip pooled 2x2 -> 14x28; 3 latent frames
    batch = step_batch(cfg, 1 if setup.preset == "paper" else cfg.train.batch_size)
    times, cpu_times, losses = [], [], []
    for _ in range(3 if setup.preset == "paper" else 8):  # the first step also allocates AdamW's state
        start, cpu = time.perf_counter(), time.process_time()
        last_loss = accumulate_gradients(ddp, [batch], cfg.model, setup.separate_passes, torch.device("cpu"),
                                         Precision(setup.precision))["loss"]
        torch.nn.utils.clip_grad_norm_(params, cfg.train.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu)
        losses.append(float(last_loss))
    dist.destroy_process_group()
    return {"first_s": times[0], "step_s": statistics.median(times[1:]), "cpu_s": statistics.median(cpu_times[1:]),
            "peak_gib": machine.peak_gib(), "losses": losses,
            "malloc": allocator.active(), "trainable_m": sum(p.numel() for p in params) / 1e6}


def part_b(only: list[int] | None, presets: list[str]) -> None:
    from model.precision import bf16_support
    from pipeline.config import Allocator
    from pipeline.train import allocator

    print("\nPart B: one training step (random weights, paper batch 1, demo its batch size, AdamW, DDP world size 1)")
    print(f"machine: {machine.describe(torch.get_num_threads())}; bf16: {bf16_support('cpu')[1]}\n")
    print("| preset | passes | activation checkpointing | allocator | precision | first step s | step s (median; CPU s) "
          "| peak RSS GiB |")
    print("|---|---|---|---|---|---|---|---|")
    for index, setup in enumerate(SETUPS):
        if (only and index not in only) or setup.preset not in presets:
            continue
        try:
            env = {**os.environ, **allocator.worker_env(Allocator(setup.allocator))}
        except ValueError as err:
            print(f"{setup.label()} skipped: {err} | | |", flush=True)
            continue
        out = subprocess.run([sys.executable, "-m", "benchmarks.train_throughput", "--paper-child",
                              json.dumps(asdict(setup))],
                             capture_output=True, text=True, env=env)
        if out.returncode != 0:
            reason = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
            print(f"{setup.label()} failed: {reason} | | |", flush=True)
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"{setup.label()} {r['first_s']:.2f} | {r['step_s']:.3f} (CPU {r['cpu_s']:.3f}) | {r['peak_gib']:.2f} |",
              flush=True)
    print("\nfor scale: the paper authors' code on this machine kind needs ~22-24 GiB without checkpointing "
          "(does not fit 24 GiB), ~32 s/step and ~19 GiB with per-block checkpointing; target <= 14 GiB, <= 32 s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--skip-paper", action="store_true")
    parser.add_argument("--only-paper", action="store_true")
    parser.add_argument("--rows", type=int, nargs="*", help="part B: only these rows (0-based)")
    parser.add_argument("--presets", default="paper,demo", help="part B: the presets whose rows run")
    parser.add_argument("--paper-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.paper_child is not None:
        print(json.dumps(paper_step(StepSetup(**json.loads(args.paper_child)))))
        return
    if not args.only_paper:
        part_a(args.steps)
    if not args.skip_paper:
        part_b(args.rows, args.presets.split(","))


if __name__ == "__main__":
    main()
