"""The prior's chain before Light-WAM trains: corpus -> fitted VAE -> corpus cache -> pretrained DiT.

Each step is skipped when its content-addressed result exists (the corpus by its
recording settings, the VAE fit by its settings and the corpus fingerprint, the
cache by its identity, the pretraining by its settings and the cache
fingerprint), so ablations that change only Light-WAM's training reuse the
registered prior and VAE. Afterwards `cfg` points at both by `models:/NAME/VERSION`.
"""

from __future__ import annotations

import copy

from pipeline.config import Config
from pipeline.console import console


def corpus_view(cfg: Config, corpus_path: str) -> Config:
    """`cfg` reading the corpus instead of the demonstrations (same cameras, image size, VAE and text encoder)."""
    c = copy.deepcopy(cfg)
    c.data.path = corpus_path
    c.cache.current_frames = False  # pretraining reads latents only
    return c


def ensure_prior(cfg: Config) -> tuple[str, str]:
    """Run (or skip) the chain and set `cache.vae.pretrained_path` and `model.backbone.pretrained_path`."""
    from pipeline.preprocess import preprocess
    from pipeline.prior.corpus import ensure_corpus
    from pipeline.prior.fit_vae import fit
    from pipeline.prior.pretrain import pretrain

    console.print("prior 1/4: action-free corpus")
    view = corpus_view(cfg, str(ensure_corpus(cfg)))
    view.cache.vae.pretrained_path = ""
    view.model.backbone.pretrained_path = ""
    console.print("prior 2/4: VAE fitted to the corpus frames")
    vae_uri = fit(view).uri
    view.cache.vae.pretrained_path = vae_uri
    console.print("prior 3/4: corpus cache with the fitted VAE")
    built = preprocess(view)
    if not built.ok:
        raise SystemExit(f"corpus cache failed: {built.message}")
    console.print("prior 4/4: video pretraining of the DiT")
    prior_uri = pretrain(view, built.open())
    cfg.cache.vae.pretrained_path, cfg.model.backbone.pretrained_path = vae_uri, prior_uri
    console.print(f"prior: VAE {vae_uri}, DiT {prior_uri}")
    return vae_uri, prior_uri
