"""Rank-0 logging into an MLflow run the driver opened: metrics and pictures.

Workers may run on other nodes, so this talks to the tracking server through
an explicit `MlflowClient(uri)` and run id rather than MLflow's global state.
"""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")  # headless workers
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
from mlflow import MlflowClient  # noqa: E402
from mlflow.entities import Metric  # noqa: E402

from model.video_objective import noise_clip  # noqa: E402


class RunLogger:
    def __init__(self, tracking_uri: str, run_id: str) -> None:
        self.client = MlflowClient(tracking_uri)
        self.run_id = run_id

    def metrics(self, values: dict[str, float], step: int) -> None:
        stamp = int(__import__("time").time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, float(v), stamp, step) for k, v in values.items()])

    def tag(self, key: str, value: str) -> None:
        self.client.set_tag(self.run_id, key, value)

    @torch.no_grad()
    def plots(self, model, batch: dict[str, torch.Tensor], step: int) -> None:
        """Predicted against true action chunks, and the one-step denoised future latents against the truth."""
        model.eval()
        pred = model.predict_actions(batch).float().cpu()
        true, mask = batch["actions"].float().cpu(), batch["action_mask"].cpu()
        self.client.log_figure(self.run_id, _action_figure(pred[0], true[0], mask[0]), f"plots/actions_step{step:06d}.png")

        bb = model.backbone
        video = batch["video_latents"][:1]
        ctx = bb.context(batch["text"][:1], batch["proprio"][:1], batch.get("text_mask", None)[:1] if "text_mask" in batch else None)
        tokens = (video.shape[3] // bb.cfg.patch_size[1]) * (video.shape[4] // bb.cfg.patch_size[2])
        noised = noise_clip(video, model.cfg.flow_shift, tokens, torch.Generator(device=video.device).manual_seed(step))
        _, velocity = bb(noised.x_t, ctx, noised.timestep, first_frame_causal=True)
        sigma = noised.timestep[0, -1].item() / 1000.0
        x0_hat = noised.x_t - sigma * velocity  # x_t = x0 + sigma (eps - x0)
        x0_hat[:, :, 0] = video[:, :, 0]  # frame 0 is the clean context, not a prediction
        self.client.log_figure(self.run_id, _latent_figure(video[0].cpu(), x0_hat[0].float().cpu(), sigma),
                               f"plots/video_latents_step{step:06d}.png")
        model.train()


def _action_figure(pred: torch.Tensor, true: torch.Tensor, mask: torch.Tensor):
    horizon, dims = true.shape
    fig, axes = plt.subplots(1, dims, figsize=(3 * dims, 2.6), squeeze=False)
    for d in range(dims):
        ax = axes[0, d]
        ax.plot(true[:, d], label="true", color="black")
        ax.plot(pred[:, d], label="predicted", color="tab:orange", linestyle="--")
        pad = (~mask.bool()).nonzero()
        if len(pad):
            ax.axvspan(int(pad[0]), horizon - 1, color="grey", alpha=0.15, label="padding")
        ax.set_title(f"action dim {d}")
        ax.set_xlabel("step in chunk")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    plt.close(fig)
    return fig


def _latent_figure(true: torch.Tensor, pred: torch.Tensor, sigma: float):
    """Rows: true / predicted; columns: latent frames (mean over channels, the truth's colour scale)."""
    frames = true.shape[1]
    fig, axes = plt.subplots(2, frames, figsize=(2.4 * frames, 3.6), squeeze=False)
    for f in range(frames):
        for row, (name, x) in enumerate([("true", true), ("predicted", pred)]):
            ax = axes[row, f]
            truth = true[:, f].mean(0)
            ax.imshow(x[:, f].mean(0), cmap="viridis", vmin=float(truth.min()), vmax=float(truth.max()))
            ax.set_title(f"{name} f{f}" + (" (context)" if f == 0 else ""), fontsize=8)
            ax.axis("off")
    fig.suptitle(f"future latents, one-step estimate at sigma={sigma:.2f}", fontsize=9)
    fig.tight_layout()
    plt.close(fig)
    return fig
