"""The smallest whole-pipeline config: one MetaWorld task, 32x32 cameras, a tiny VAE and DiT.

Shared by the tests that run `python -m pipeline.run` end to end (directly or
under `ray job submit`), so every such run finishes in a minute or two on a
2-core CPU. A real demo dataset (not a synthetic one) is used because the
closed-loop evaluation needs MetaWorld tasks matching the training instructions.
"""

from __future__ import annotations

DEMO = ["demo.tasks=[reach-v3]", "demo.episodes_per_task=2", "demo.width=32", "demo.height=32",
        "demo.cameras=[corner,gripperPOV]"]

CACHE = [
    "cache.image_height=32", "cache.image_width=32", "cache.num_frames=5", "cache.frame_stride=2",
    "cache.action_horizon=4", "cache.sample_stride=4", "cache.samples_per_shard=16", "cache.encode_batch_size=8",
    "cache.vae.base_dim=8", "cache.vae.dim_mult=[1,1,1,1]", "cache.vae.temporal_downsample=[false,true,true]",
    "cache.vae.num_res_blocks=1", "cache.latent_downsample=2",
    "cache.text.encoder=minilm", "cache.text.max_tokens=32", "cache.text.dim=384",
    "model.action_horizon=4",  # the expert predicts the chunks the cache stores
]

MODEL = [
    "model.backbone.num_layers=2", "model.backbone.num_attention_heads=2", "model.backbone.attention_head_dim=16",
    "model.backbone.ffn_dim=64", "model.backbone.text_dim=384", "model.backbone.freq_dim=32",
    "model.backbone.adapter_layers=[0,1]", "model.backbone.adapter_dim=16", "model.backbone.lora_rank=4",
    "model.backbone.lora_alpha=8", "model.expert.num_queries=2", "model.expert.num_heads=2",
    "model.expert.compress_dim=32", "model.expert.hidden_dim=32", "model.expert.step_embed_dim=16",
    "model.action_dim=4", "model.proprio_dim=4",
]

TRAIN = ["train.batch_size=4", "train.lr=2e-3", "train.warmup_steps=1", "train.num_workers=1", "train.log_every=1",
         "train.steps=6", "train.checkpoint_every=3", "train.plot_every=100"]

EVAL = ["eval.episodes_per_task=1", "eval.max_steps=30", "eval.num_workers=1", "eval.replan_every=4",
        "eval.videos_per_task=0"]

RUN = [*DEMO, *CACHE, *MODEL, *TRAIN, *EVAL]


def run_args(workdir, *extra: str) -> list[str]:
    """`pipeline.run` arguments for a tiny run in `workdir` (later overrides win)."""
    return [f"workdir={workdir}", *RUN, *extra]
