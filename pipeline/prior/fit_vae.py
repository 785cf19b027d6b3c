"""`python -m pipeline.prior.fit_vae [overrides]`: fit the small Wan VAE to a dataset's frames and register it.

The frames are those the cache will encode: every camera resized to
`cache.image_height` x `cache.image_width` and joined side by side. The VAE is
built from `cache.vae` (its architecture), trained with `model.vae_fit`, its
per-channel latent statistics stored in its config (`latents_mean` /
`latents_std`, as diffusers' Wan VAE config holds them), and saved with
`save_pretrained` under `vae/` of a Wan-style directory that is logged to
MLflow and registered as `vae_fit.registered_model`. The cache then loads it
with `cache.vae.pretrained_path=models:/wan-vae@latest` (or the directory).
A fit whose content-addressed run (config + dataset fingerprint) finished is skipped.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
from diffusers import AutoencoderKLWan
from mlflow.entities import Metric

from model.pixels import resize
from model.vae import build_vae, decode, encode
from model.vae_fit import fit_vae_timed, frames_to_clips
from pipeline import tracking
from pipeline.cli import parse_or_exit, to_flat_dict
from pipeline.config import Config
from pipeline.console import console
from pipeline.registry import register_version, registered_run

RUN_TAG = "lightwam.vae_fit"


def open_dataset(cfg: Config):
    """The dataset's reader: its fingerprint names the fit before any frame is decoded."""
    from pipeline.preprocess import dataset_root
    from stages.lerobot import LeRobotDataset

    return LeRobotDataset(dataset_root(cfg), cameras=cfg.data.cameras or None, state_key=cfg.data.state_key,
                          action_key=cfg.data.action_key)


def dataset_frames(cfg: Config, reader, limit: int) -> np.ndarray:
    """Clips spread evenly over the dataset, as the cache cuts them (`cache.num_frames` every `cache.frame_stride`,
    uint8 [N, T, H, W*cameras, 3]; T = 1 with `vae_fit.single_frames`), up to `limit` frames in all."""
    episodes = reader.episodes
    if not episodes:
        raise ValueError(f"dataset {reader.root}: no episodes to fit a VAE on")
    t = 1 if cfg.vae_fit.single_frames else cfg.cache.num_frames
    offsets = np.arange(t) * cfg.cache.frame_stride
    per_episode = max(1, -(-(limit // t) // len(episodes)))
    out = []
    for episode in episodes:
        starts = np.unique(np.linspace(0, max(0, episode.length - 1 - offsets[-1]), per_episode).round().astype(int))
        index = np.minimum(starts[:, None] + offsets, episode.length - 1)  # [clips, T]
        needed, inverse = np.unique(index, return_inverse=True)
        views = [resize(reader.read_images(episode, cam, needed), cfg.cache.image_height, cfg.cache.image_width)
                 for cam in reader.camera_keys]
        out.append(np.concatenate(views, axis=2)[inverse.reshape(index.shape)])
    clips = np.concatenate(out)
    clips = clips[np.random.default_rng(0).permutation(len(clips))[:max(1, limit // t)]]
    return clips[:, 0] if t == 1 else clips


def fit_name(cfg: Config, data_fingerprint: str) -> str:
    flat = {k: v for k, v in to_flat_dict(cfg).items() if k.startswith(("cache.vae.", "vae_fit.", "cache.image_"))
            and k not in ("vae_fit.registered_model",)}
    flat["data"] = data_fingerprint
    return "vae-" + hashlib.sha256(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _grid(originals: torch.Tensor, recon: torch.Tensor):
    """Columns of clips; rows: original above reconstructed, for the first and (clips) the last frame."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, frames = originals.shape[0], sorted({0, originals.shape[2] - 1})
    rows = [(f"{name} f{f}", x, f) for f in frames for name, x in (("original", originals), ("reconstructed", recon))]
    fig, axes = plt.subplots(len(rows), n, figsize=(1.8 * n * originals.shape[-1] / originals.shape[-2],
                                                    1.9 * len(rows)), squeeze=False)
    for i in range(n):
        for r, (name, x, f) in enumerate(rows):
            img = ((x[i, :, f].permute(1, 2, 0).float() + 1) * 127.5).clamp(0, 255).byte().numpy()
            axes[r, i].imshow(img)
            axes[r, i].axis("off")
            axes[r, i].set_title(name if i == 0 else "", fontsize=8)
    fig.tight_layout()
    plt.close(fig)
    return fig


@dataclass
class FitResult:
    uri: str  # models:/NAME/VERSION
    vae: AutoencoderKLWan | None  # the fitted VAE (None when an earlier fit was found)
    frames: np.ndarray | None  # the dataset frames it was fitted and measured on (None when found)


def fit(cfg: Config) -> FitResult:
    """Fit (or find the finished fit of) this config's VAE and register it."""
    vc = cfg.vae_fit
    reader = open_dataset(cfg)
    data_fp = reader.fingerprint()
    experiment_id = tracking.setup(cfg)
    name = fit_name(cfg, data_fp)
    done = registered_run(experiment_id, RUN_TAG, name, vc.registered_model)
    if done:
        console.print(f"fit_vae: '{name}' already fitted and registered as {done}: skipped")
        return FitResult(done, None, None)
    frames = dataset_frames(cfg, reader, vc.max_frames)
    held = frames[: min(len(frames) // 10, 64)] if len(frames) >= 20 else frames[:0]
    train = frames[len(held):]
    console.print(f"fit_vae: '{name}': {len(train)} training clips ({len(held)} held out) of "
                  f"{frames.shape[1:-1]} (frames x height x width), {vc.fit.frame_steps} steps on their single frames, "
                  f"then {vc.fit.steps} on clips")
    with mlflow.start_run(experiment_id=experiment_id, run_name=name) as run:
        mlflow.set_tags({RUN_TAG: name, "lightwam.dataset_fingerprint": data_fp})
        mlflow.log_params({k: str(v)[:500] for k, v in to_flat_dict(cfg).items()
                           if k.startswith(("cache.vae.", "vae_fit.", "cache.image_", "data."))})
        vae = build_vae(cfg.cache.vae)
        every = max(1, min(50, (vc.fit.steps + vc.fit.frame_steps) // 10))
        losses = fit_vae_timed(vae, train, vc.fit, report_every=every, report=console.print)
        stamp = int(time.time() * 1000)
        for start in range(0, len(losses), 1000):  # MLflow takes at most 1000 metrics per batch
            mlflow.MlflowClient().log_batch(run.info.run_id, metrics=[
                Metric("vae_loss", loss, stamp, step) for step, loss in enumerate(losses[start:start + 1000], start + 1)])
        clips = frames_to_clips(held if len(held) else train[:16])
        latents = encode(vae, clips)
        recon = decode(vae, latents)
        per_channel = latents.transpose(0, 1).flatten(1)
        mlflow.log_metrics({"heldout_l1": float((recon - clips).abs().mean()),
                            "heldout_latent_mean_abs": float(per_channel.mean(1).abs().max()),
                            "heldout_latent_std_mean": float(per_channel.std(1).mean())})
        mlflow.log_figure(_grid(clips[:8], recon[:8]), "vae_reconstructions.png")
        with tempfile.TemporaryDirectory() as tmp:
            vae.save_pretrained(Path(tmp) / "vae")
            mlflow.log_artifacts(tmp, "wan")
        uri = register_version(cfg, run.info.run_id, "wan", vc.registered_model)
    console.print(f"fit_vae: registered {uri}; use cache.vae.pretrained_path={uri}")
    return FitResult(uri, vae, frames)


def main(argv: list[str] | None = None) -> None:
    cfg = parse_or_exit(argv)
    fit(cfg)


if __name__ == "__main__":
    main()
