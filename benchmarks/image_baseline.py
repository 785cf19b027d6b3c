"""A yardstick that does look at the cameras: a small conv policy trained end to end on the frames.

benchmarks/state_baseline.py showed that a policy that never looks at the cameras
scores what Light-WAM scores on MT10 (41.8% against 42.8-44.2%). This asks the
other half of the question: how much a plain image policy gains from the same
20 demonstrations per task, when it reads the current frame itself instead of
through the Wan VAE and the video backbone. It is the usual visuomotor recipe:
a few conv layers and a spatial softmax (`model.pixel_keypoints`, the encoder of
`model.expert.pixel_input`), random shifts of a few pixels as augmentation, then
the state-only MLP's head on (keypoints, normalized state, one-hot instruction).

The frames are the current frames of the cached samples, decoded from the demo
dataset and resized exactly as the cache prepared them; evaluation feeds the
frames the simulator renders, joined as the cache joins them. Same steps, samples
per step and learning rate as the model's training. Run as a script, it fits the
policy and rolls it out on the held-out layouts `pipeline.evaluate` uses:

    MUJOCO_GL=egl .venv/bin/python benchmarks/image_baseline.py preset=bench [--shift 4] [--balance-tasks] \\
        [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]

import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.state_baseline import (  # noqa: E402
    StateOnlyChunkPolicy,
    StateOnlyPolicy,
    prepare,
    roll_out,
    stacked,
    task_balanced_weights,
    text_code,
)
from model.pixel_keypoints import PixelKeypoints  # noqa: E402
from pipeline.train_data import random_shift  # noqa: E402


class ImagePolicy(StateOnlyPolicy):
    """(pixels [B, 3, H, W] in [-1, 1], proprio [B, P], instruction) -> chunk [B, H, A]."""

    def __init__(self, task_codes: torch.Tensor, proprio_dim: int, horizon: int, action_dim: int,
                 channels: int = 32, hidden: int = 256, film: bool = False) -> None:
        super().__init__(task_codes, proprio_dim + 2 * channels, horizon, action_dim, hidden)
        self.encoder = PixelKeypoints(channels, condition_dim=len(task_codes) if film else 0)

    def forward(self, pixels: torch.Tensor, proprio: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        points = self.encoder(pixels.float(), onehot if self.encoder.film is not None else None)
        return super().forward(torch.cat([points, proprio.float()], 1), onehot)

    @torch.inference_mode()
    def predict_actions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        onehot = self.task_onehot(text_code(batch["text"], batch["text_mask"]))
        return self(batch["current_pixels"], batch["proprio"], onehot)


def to_unit(frames: torch.Tensor) -> torch.Tensor:
    """uint8 [B, H, W, 3] -> float32 [B, 3, H, W] in [-1, 1] (as `sim.observation.to_pixels`)."""
    return frames.float().div(127.5).sub(1.0).movedim(-1, 1)


def fit_image_policy(samples: list[dict], frames: torch.Tensor, steps: int, batch_size: int, lr: float = 3e-4,
                     weighted_steps: int = 0, seed: int = 0, shift: int = 4, channels: int = 32,
                     log_every: int = 0, balance_tasks: bool = False, film: bool = False) -> ImagePolicy:
    """AdamW on the masked chunk MSE; `frames` uint8 [N, H, W, 3] is each sample's current frame.

    `balance_tasks` draws every task equally often instead of every sample: tasks with short episodes
    (reach, pick-place, push: 7-8% of the MT10 samples each) then get a tenth of the steps. `film` conditions
    the keypoint convolutions on the instruction (`PixelKeypoints(condition_dim=...)`)."""
    if len(frames) != len(samples):
        raise ValueError(f"{len(samples)} samples but {len(frames)} frames")
    proprio, actions, mask, codes = stacked(samples, weighted_steps)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # a seeded init that leaves the caller's random state alone
        torch.manual_seed(seed)
        policy = ImagePolicy(torch.unique(codes, dim=0), proprio.shape[1], actions.shape[1], actions.shape[2],
                             channels, film=film)
    onehot = policy.task_onehot(codes)
    weights = task_balanced_weights(codes) if balance_tasks else None
    opt = torch.optim.AdamW(policy.parameters(), lr=lr)
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, len(samples), (batch_size,), generator=gen) if weights is None else \
            torch.multinomial(weights, batch_size, replacement=True, generator=gen)
        pixels = random_shift(to_unit(frames[idx]), shift, gen)
        sq = (policy(pixels, proprio[idx], onehot[idx]) - actions[idx]).pow(2).mean(-1)
        loss = (sq * mask[idx]).sum() / mask[idx].sum().clamp(min=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if log_every and (step + 1) % log_every == 0:
            print(f"  step {step + 1}/{steps}: loss {loss.item():.4f} ({time.perf_counter() - start:.0f} s)", flush=True)
    return policy.eval()


def sample_frames(cfg, handle, samples: list[dict]) -> torch.Tensor:
    """uint8 [N, H, W * ncam, 3]: each sample's current frame, decoded and joined as the cache did."""
    from stages.decode import resize
    from stages.lerobot import LeRobotDataset
    from stages.cache_loader import dataset_path

    cameras = list(handle.manifest["identity"]["data.cameras"])
    dataset = LeRobotDataset(dataset_path(cfg), cameras=cameras)
    by_index = {e.index: e for e in dataset.episodes}
    wanted: dict[int, list[int]] = {}
    for i, s in enumerate(samples):
        wanted.setdefault(int(s["episode"]), []).append(i)
    scale = cfg.cache.current_frame_scale if cfg.cache.current_frames else 1  # the frame the pixel path reads
    h, w = cfg.cache.image_height * scale, cfg.cache.image_width * scale
    out = torch.zeros(len(samples), h, w * len(cameras), 3, dtype=torch.uint8)
    for episode, rows in wanted.items():
        index = np.array([int(samples[i]["frame"]) for i in rows])
        views = [resize(dataset.read_images(by_index[episode], camera, index), h, w) for camera in cameras]
        out[rows] = torch.from_numpy(np.concatenate(views, axis=2))
    return out


class ImageChunkPolicy(StateOnlyChunkPolicy):
    """The fitted conv policy as an evaluation-loop policy: the rendered frame, raw state in, raw chunk out."""

    def normalized_chunks(self, requests, state: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        frames = [r.image if r.current is None else r.current for r in requests]  # as `sample_frames` read them
        return self.policy(to_unit(torch.from_numpy(np.stack(frames))), state, onehot)


def main(argv: list[str] | None = None) -> None:
    from pipeline.console import console

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shift", type=int, default=4, help="random shift augmentation, pixels (0 = none)")
    parser.add_argument("--channels", type=int, default=32, help="conv channels = spatial-softmax keypoints")
    parser.add_argument("--balance-tasks", action="store_true", help="draw every task equally often, not every sample")
    parser.add_argument("--film", action="store_true", help="condition the keypoint convolutions on the instruction")
    args, overrides = parser.parse_known_args(list(sys.argv[1:] if argv is None else argv))
    cfg, batch, handle, samples = prepare(overrides)
    tr = cfg.train
    t0 = time.perf_counter()
    frames = sample_frames(cfg, handle, samples)
    console.print(f"decoded {len(frames)} current frames {tuple(frames.shape[1:])} in {time.perf_counter() - t0:.0f} s")
    t0 = time.perf_counter()
    policy = fit_image_policy(samples, frames, tr.steps, batch, tr.lr, cfg.model.action_weighted_steps, tr.seed,
                              args.shift, args.channels, log_every=max(tr.steps // 10, 1),
                              balance_tasks=args.balance_tasks, film=args.film)
    fit_s = time.perf_counter() - t0
    balanced = ("-balanced" if args.balance_tasks else "") + ("-film" if args.film else "")
    text = {task: handle.text[key] for task, key in handle.manifest["text_keys"].items()}
    roll_out(cfg, handle, ImageChunkPolicy(policy, handle.stats, text),
             f"image-{handle.fingerprint[:12]}-{tr.steps}-shift{args.shift}{balanced}-replan{cfg.eval.replan_every}",
             f"conv + spatial-softmax policy ({args.channels} keypoints, shift {args.shift}{balanced}): "
             f"{len(samples)} samples, {tr.steps} steps x {batch}, fitted in {fit_s:.0f} s",
             {"model": "conv + spatial softmax", "steps": tr.steps, "batch": batch, "shift": args.shift,
              "channels": args.channels, "balance_tasks": args.balance_tasks, "film": args.film,
              "fit_s": round(fit_s, 1)})


if __name__ == "__main__":
    main()
