"""`bench_prior`: the paper's recipe on MetaWorld MT10 over a prior pretrained on the robot's own world.

Before Light-WAM trains, `pipeline.run` records the action-free corpus (every
v3 task, many layouts, noisy executed actions), fits the VAE to its frames and
pretrains the demo-sized Wan DiT on it (`pipeline.prior`); then the demos are
cached with the fitted VAE and Light-WAM trains as the paper does: backbone
frozen, LoRA and adapters and the expert trained, video co-training on, and
none of the bench preset's extra paths (state, pixels).
"""

from __future__ import annotations

from pipeline.config import Config


def bench_prior() -> Config:
    from pipeline.presets import bench

    cfg = bench()
    cfg.preset, cfg.workdir = "bench_prior", "work-bench-prior"
    # the paper's expert alone
    cfg.cache.current_frames = False
    cfg.model.expert.state_input = False
    cfg.model.expert.pixel_input = False
    # frozen pretrained backbone, LoRA + adapters, video co-training
    bb = cfg.model.backbone
    bb.freeze = True
    bb.lora_rank, bb.lora_alpha = 16, 32
    cfg.model.video_loss_weight = 1.0
    # The prior's chain, about 4 hours of 2 idle cores, extrapolated from pilots on a loaded machine and the
    # bench cache's idle encode rate (17 samples/s): corpus 1000 episodes (~1 h to record, ~1.2 h to encode),
    # VAE 1000 steps of 4 clips (~0.8 h), pretraining 20000 steps (~0.9 h at ~100 samples/s). Unmeasured idle.
    cfg.pretrain.before_run = True
    cfg.corpus.episodes_per_task = 20
    cfg.vae_fit.fit.steps = 1000
    cfg.vae_fit.fit.batch_size = 4  # clips of 9 frames
    cfg.pretrain.steps = 20000
    cfg.pretrain.val_every = 500
    return cfg
