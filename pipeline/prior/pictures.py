"""Pictures of a video branch (the prior's, or a trained Light-WAM's): predicted future frames beside the
real ones, decoded by the cache's VAE (`diagnostics.future_strip` draws the Light-WAM one).

The cache holds latents, not pixels, so "real" is the VAE's decoding of the true
(pooled) latent clip and "predicted" its decoding of the prior's generated one:
the difference between the rows is the prior's alone. One column per latent
frame (the last pixel frame of each 4-frame group); frame 0 is the given context.
"""

from __future__ import annotations

import textwrap

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from model.config import VaeConfig  # noqa: E402
from model.vae import build_vae, decode  # noqa: E402


def _images(vae, latents: torch.Tensor) -> torch.Tensor:
    """[B, C, F, h, w] latents -> uint8 [B, F, H, W, 3], one pixel frame per latent frame."""
    pixels = decode(vae, latents.float().cpu())  # [B, 3, 1 + 4(F-1), H, W]
    picked = pixels[:, :, ::4]
    return ((picked.permute(0, 2, 3, 4, 1) + 1) * 127.5).clamp(0, 255).byte()


PRIOR_TITLE = "video prior on held-out clips: real vs predicted (decoded by the cache's VAE)"


def future_frames_figure(vae, clips: dict[str, torch.Tensor], predicted: torch.Tensor,
                         labels: list[str] | None = None, title: str = PRIOR_TITLE):
    """Two rows per clip (real, predicted), one column per latent frame, decoded by `vae` (a built VAE, or
    the `VaeConfig` to build it from); `labels` name the clips."""
    vae = build_vae(vae) if isinstance(vae, VaeConfig) else vae
    real, pred = _images(vae, clips["video_latents"]), _images(vae, predicted)
    n, frames = real.shape[:2]
    aspect = real.shape[3] / real.shape[2]
    fig, axes = plt.subplots(2 * n, frames, figsize=(1.8 * frames * aspect, 1.9 * 2 * n), squeeze=False)
    for i in range(n):
        for row, (name, x) in enumerate((("real", real), ("predicted", pred))):
            for f in range(frames):
                ax = axes[2 * i + row, f]
                ax.imshow(x[i, f].numpy())
                ax.set_xticks([])
                ax.set_yticks([])
                if f == 0:
                    ax.set_ylabel(f"{labels[i] if labels else f'clip {i}'}\n{name}", fontsize=7)
                if i == 0 and row == 0:
                    ax.set_title("context" if f == 0 else f"future {f}", fontsize=8)
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 14)), fontsize=8)  # ~14 characters an inch
    fig.tight_layout()
    plt.close(fig)
    return fig
