"""Can a frame's cached latent say where the goal is? A probe, against the number of layouts it learns from.

Issue 8: with the `bench` preset the policy solves the tasks whose target is always in the same place
(door, drawer, window) and fails the ones whose target is drawn anew each episode and seen only in the
image (reach, push, pick-place, peg-insert-side). This measures the first link of that chain in isolation:
for each task, first frames of many seeded layouts are rendered as the demos render them (`workspace` and
`gripperPOV`, side by side), and a probe (ridge regression, and a small conv net) is fitted to read the
privileged goal and object positions back from

- the `bench` VAE latent of the raw rendered frame (what the policy sees in closed-loop evaluation),
- the same latent after the frame went through the demo dataset's video codec (`--codec`; what training
  sees from the default h264, yuv420p at crf 18),
- the latent of a VAE of the same size fitted to the training layouts' frames (`model.vae_fit`),
- the raw pixels (a conv net on the image itself: what a better encoder could reach),
- with `--features vaes --vaes V1 V2 ...`: the latents of VAEs fitted elsewhere (`pipeline.prior.fit_vae`), one
  column each, to choose a VAE's compression by what its latents still say about positions,
- with `--features prior --vae V --prior P` (issue 32): the latent of the fitted VAE `V`, and the hidden
  states the expert reads (`diagnostics.prior_states`) of the pretrained DiT `P` on those latents against
  those of a random DiT on the random VAE's latents (what arm C's expert reads),

trained on 20 layouts (the preset's demos per task) up to a few hundred, tested on other layouts. The
table gives the mean error in cm and the share of test layouts located within 5 cm (reach's and push's
success radius). Chance is the error of always guessing the training mean.

    .venv/bin/python -m diagnostics.goal_probe [--tasks reach-v3 push-v3] [--train 20 100 400] [--test 200]
        [--features latent latent-coded latent-fitted pixels vaes prior] [--codec h264] [--size 64]
        [--vaes models:/wan-vae/1 models:/wan-vae/2]
        [--preset bench_prior --workdir W --vae models:/wan-vae/1 --prior models:/wan-prior/1]
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

# the repository root instead of benchmarks/, whose metaworld.py would shadow the metaworld package

import av
import numpy as np
import torch
from rich.table import Table

from diagnostics.position_probes import ridge, score, train_conv
from model.vae import build_vae, compression, encode
from model.vae_fit import VaeFitConfig, fit_vae_timed, frames_to_clips
from pipeline.console import console
from pipeline.presets import PRESETS
from sim.config import Codec
from sim.lerobot_writer import ENCODERS
from sim.metaworld_env import MetaWorldEnv

SEED_BASE = 900_000  # far from the demo (0..) and evaluation (1000..) seeds: layouts nobody trained on


@dataclass
class Layouts:
    frames: np.ndarray  # uint8 [N, H, W * cameras, 3], cameras side by side as the cache stores them
    goal: np.ndarray  # float32 [N, 3] metres
    obj: np.ndarray  # float32 [N, 3] metres


def render_layouts(task: str, cameras: list[str], size: int, seeds: range, shadows: bool) -> Layouts:
    """First frame of each seeded layout, and where MetaWorld put the goal and the (first) object."""
    frames, goals, objs = [], [], []
    with MetaWorldEnv(task, cameras, size, size, max_steps=10) as env:
        if shadows:  # a depth cue for floating goals; MetaWorldEnv turns them off for speed
            env._env.model.light_castshadow[:] = 1
        for seed in seeds:
            obs = env.reset(seed)
            frames.append(np.concatenate([obs["images"][c] for c in cameras], axis=1))
            goals.append(np.asarray(env._env._target_pos, dtype=np.float32))
            objs.append(np.asarray(env._full_obs[4:7], dtype=np.float32))
    return Layouts(np.stack(frames), np.stack(goals), np.stack(objs))


def codec_round_trip(frames: np.ndarray, codec: Codec, fps: int = 20) -> np.ndarray:
    """Each frame as an intra frame at the demo dataset's settings for `codec`, decoded again."""
    encoder, _, options, pix_fmt = ENCODERS[codec]
    n, h, w, _ = frames.shape
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "round_trip.mp4"
        with av.open(str(path), mode="w") as out:
            stream = out.add_stream(encoder, rate=fps, options={**options, "g": "1"})
            stream.width, stream.height, stream.pix_fmt = w, h, pix_fmt
            stream.time_base = Fraction(1, fps)
            for i, image in enumerate(frames):
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
                frame.pts = i
                out.mux(stream.encode(frame))
            out.mux(stream.encode(None))
        with av.open(str(path)) as src:
            decoded = np.stack([f.to_ndarray(format="rgb24") for f in src.decode(video=0)])
    if decoded.shape != frames.shape:
        raise RuntimeError(f"{codec.value} round trip changed the shape: {frames.shape} -> {decoded.shape}")
    return decoded


def pixels(frames: np.ndarray) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> [N, 3, H, W] in [-1, 1]."""
    return frames_to_clips(frames)[:, :, 0]


@torch.no_grad()
def latents(vae, frames: np.ndarray, batch: int = 64) -> torch.Tensor:
    """The cache's current-frame latent: a one-frame clip through the VAE -> [N, z, H/s, W/s]."""
    x = frames_to_clips(frames)
    return torch.cat([encode(vae, x[i:i + batch])[:, :, 0] for i in range(0, len(x), batch)])


def prior_features(cfg, vae_path: str, prior_path: str, task: str, frames: np.ndarray, raw: torch.Tensor) -> dict:
    """The fitted VAE's latents, and the expert's input states: prior DiT on them, random DiT on random latents.

    The prior's states are probed at every block the expert reads (`adapter_layers`), the random DiT's at the last.
    """
    from diagnostics import prior_states as ps

    fitted = latents(ps.load_vae(cfg, vae_path), frames)
    context = ps.text_context(cfg, task)

    def grid(states: torch.Tensor, like: torch.Tensor) -> torch.Tensor:  # [N, tokens, D] -> [N, D, h/p, w/p]
        p = cfg.model.backbone.patch_size
        return states.transpose(1, 2).unflatten(2, (like.shape[2] // p[1], like.shape[3] // p[2]))

    random = grid(list(ps.dit_states(ps.load_backbone(cfg, ""), raw, context).values())[-1], raw)
    feats = {f"fitted latent ({vae_path})": (fitted, fitted, False),
             "random DiT states (last fused block) on random latents": (random, random, False)}
    for layer, states in ps.dit_states(ps.load_backbone(cfg, prior_path), fitted, context).items():
        prior = grid(states, fitted)
        feats[f"prior DiT block {layer} states ({prior_path}) on fitted latents"] = (prior, prior, False)
    return feats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["reach-v3", "push-v3", "pick-place-v3", "peg-insert-side-v3"])
    parser.add_argument("--train", type=int, nargs="+", default=[20, 100, 400], help="training layouts per probe")
    parser.add_argument("--test", type=int, default=200, help="test layouts per task")
    parser.add_argument("--cameras", nargs="+", default=None, help="cameras side by side; default the bench preset's")
    parser.add_argument("--features", nargs="+", default=["latent", "latent-coded", "pixels"],
                        choices=["latent", "latent-coded", "latent-fitted", "pixels", "vaes", "prior"],
                        help="what the probes read")
    parser.add_argument("--fit-vae-steps", type=int, default=600, help="for latent-fitted: VAE training steps")
    parser.add_argument("--codec", type=Codec, default=Codec.h264, choices=list(Codec),
                        help="demo video codec for the latent-coded features (training frames)")
    parser.add_argument("--size", type=int, default=0, help="camera resolution (square); 0 = the bench preset's")
    parser.add_argument("--shadows", action="store_true", help="render with MuJoCo's shadows (the envs turn them off)")
    parser.add_argument("--updates", type=int, default=1500, help="minibatch updates per conv probe")
    parser.add_argument("--preset", default="bench", help="cameras, VAE and DiT geometry, text encoder")
    parser.add_argument("--workdir", help="the preset's workdir: its MLflow store resolves models:/ URIs")
    parser.add_argument("--vae", default="", help="for prior: the fitted VAE (directory or models:/ URI)")
    parser.add_argument("--prior", default="", help="for prior: the pretrained DiT (directory or models:/ URI)")
    parser.add_argument("--vaes", nargs="+", default=[], help="for vaes: fitted VAEs (directories or models:/ URIs)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    cfg = PRESETS[args.preset]()
    if args.workdir:
        cfg.workdir = args.workdir
    if "prior" in args.features and not (args.vae and args.prior):
        parser.error("--features prior needs --vae and --prior")
    if "vaes" in args.features and not args.vaes:
        parser.error("--features vaes needs --vaes")
    cameras, size = args.cameras or cfg.demo.cameras, args.size or cfg.cache.image_height
    vae = build_vae(cfg.cache.vae)
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}"
    console.print(f"[bold]goal probe[/]: {machine}, torch {torch.__version__}; cameras {cameras} at {size}x{size}, "
                  f"shadows {'on' if args.shadows else 'off'}, bench VAE (random, seed {cfg.cache.vae.seed}); train {args.train} layouts, test {args.test}")
    table = Table(title="where is the goal / the object? mean error cm (share within 5 cm)")
    for col in ("task", "target", "features (train -> test)", "probe", "chance",
                *[f"{n} layouts" for n in args.train]):
        table.add_column(col, justify="left" if col in ("task", "target", "features (train -> test)", "probe") else "right")
    start, rows = time.perf_counter(), []
    n_train = max(args.train)
    layouts = {task: render_layouts(task, cameras, size, range(SEED_BASE, SEED_BASE + n_train + args.test),
                                    args.shadows) for task in args.tasks}
    console.print(f"{len(args.tasks) * (n_train + args.test)} layouts rendered; {time.perf_counter() - start:.0f} s")
    others = {}
    if "vaes" in args.features:
        from diagnostics.prior_states import load_vae

        for path in args.vaes:
            other = load_vae(cfg, path)
            others[f"{path} ({compression(dict(other.config))[1]}x) latent"] = other
    fitted = None
    if "latent-fitted" in args.features:  # one VAE for all tasks, fitted on the training layouts' frames only
        fitted = build_vae(cfg.cache.vae)
        train_frames = np.concatenate([data.frames[:n_train] for data in layouts.values()])
        fit = VaeFitConfig(steps=args.fit_vae_steps)
        losses = fit_vae_timed(fitted, train_frames, fit, report=console.print)
        console.print(f"VAE fitted on {len(train_frames)} frames: loss {losses[0]:.3f} -> {losses[-1]:.3f}; "
                      f"{time.perf_counter() - start:.0f} s")
    for task, data in layouts.items():
        raw = latents(vae, data.frames)
        feats = {}
        if "latent" in args.features:
            feats["latent raw -> raw"] = (raw, raw, False)
        if fitted is not None:
            own = latents(fitted, data.frames)
            feats[f"fitted latent raw -> raw ({args.fit_vae_steps} steps)"] = (own, own, False)
        for name, other in others.items():
            own = latents(other, data.frames)
            feats[name] = (own, own, False)
        if "prior" in args.features:
            feats.update(prior_features(cfg, args.vae, args.prior, task, data.frames, raw))
        if "latent-coded" in args.features:
            coded = latents(vae, codec_round_trip(data.frames, args.codec))
            feats[f"latent {args.codec.value} -> raw"] = (coded, raw, False)
        if "pixels" in args.features:
            feats["pixels raw -> raw"] = (pixels(data.frames), pixels(data.frames), True)
        truth = torch.from_numpy(np.concatenate([data.goal, data.obj], axis=1))
        test = slice(n_train, n_train + args.test)
        console.print(f"{task}: goal spread (std, cm) "
                      f"{np.round(data.goal.std(0) * 100, 1).tolist()}, object {np.round(data.obj.std(0) * 100, 1).tolist()}"
                      f"; {time.perf_counter() - start:.0f} s")
        for name, (train_feats, test_feats, from_pixels) in feats.items():
            for probe in ("ridge", "conv"):
                if probe == "ridge" and from_pixels:
                    continue
                preds = {}
                for n in args.train:
                    if probe == "ridge":
                        preds[n] = ridge(train_feats[:n], truth[:n], test_feats[test])
                    else:
                        preds[n] = train_conv(train_feats[:n], truth[:n], test_feats[test], from_pixels, args.updates)
                for k, target in ((slice(0, 3), "goal"), (slice(3, 6), "object")):
                    if float(truth[:, k].std(0).max()) < 1e-3:
                        continue  # not randomized in this task
                    chance = score(truth[:n_train, k].mean(0).expand(args.test, 3), truth[test, k])
                    cells = [f"{e:.1f} ({w:.0f}%)" for e, w in (score(preds[n][:, k], truth[test, k]) for n in args.train)]
                    rows.append([task, target, name, probe, f"{chance[0]:.1f} ({chance[1]:.0f}%)", *cells])
                    table.add_row(*rows[-1])
        console.print(f"{task}: probes fitted; {time.perf_counter() - start:.0f} s")
    console.print(table)
    print("\n| " + " | ".join(str(c.header) for c in table.columns) + " |")  # the same, for RESULTS.md
    print("|" + " --- |" * len(table.columns))
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
