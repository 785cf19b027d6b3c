"""Named presets: `paper`, `demo` (the embedded default) and `bench` (MetaWorld MT10).

The dataclass defaults of the layers' configs *are* the paper's numbers; the
`paper` preset only adds what is specific to LIBERO data and evaluation. The
`demo` preset shrinks every model so the whole pipeline runs on a 2-core CPU
in minutes, with nothing pretrained (so its backbone is trained, not frozen).
`bench` is the demo model on MetaWorld MT10 with an hour of training and 50
evaluation episodes per task (`benchmarks/metaworld.py`).
"""

from __future__ import annotations

from collections.abc import Callable

from model.config import TextEncoder
from pipeline.config import Config
from sim.config import Codec, SimEnv


def paper() -> Config:
    """The paper's LIBERO configuration: Wan2.1-T2V-1.3B from a local directory, frozen (docs/DESIGN.md section 2)."""
    cfg = Config(preset="paper", workdir="work-paper")
    cfg.data.cameras = ["observation.images.image", "observation.images.wrist_image"]
    cfg.eval.env = SimEnv.libero
    cfg.eval.tasks = ["libero_spatial", "libero_object", "libero_goal", "libero_10"]
    cfg.eval.episodes_per_task = 50
    cfg.eval.max_steps = 400
    cfg.eval.noop_steps = 30
    cfg.eval.replan_every = 10
    # Wan2.1 is run in bf16: its frozen blocks' weights are stored so (matmuls stay in the model's dtype),
    # which takes a training step from ~14.8 to ~12 GiB (model/frozen_weights.py, benchmarks/RESULTS.md)
    cfg.model.backbone.frozen_dtype = "bfloat16"
    return cfg


def demo() -> Config:
    """The embedded default: small random models, MetaWorld demos, minutes on a 2-core CPU."""
    cfg = Config(preset="demo", workdir="work")
    # Three tasks this small model learns from 20 demos each in minutes (chosen by measurement,
    # docs/results-log.md); tasks whose goal is a marker a few pixels wide (reach, push, pick-place) need
    # a prior and far more training (benchmarks/RESULTS.md).
    cfg.demo.tasks = ["drawer-close-v3", "door-open-v3", "window-close-v3"]
    cfg.demo.episodes_per_task = 20
    # MetaWorld's `corner` view shows the 2 cm goal markers as one pixel at 64x64; `workspace` frames the
    # table closely enough for 6-9 pixels (sim.metaworld_env.VIRTUAL_CAMERAS); the wrist view scored better
    # closed loop than a second table view.
    cfg.demo.cameras = ["workspace", "gripperPOV"]
    # Lossless video: with lossy h264 the cached latents of training frames and those of the frames
    # evaluation renders differ enough to blur where objects are (diagnostics/goal_probe.py).
    cfg.demo.codec = Codec.h264_lossless
    # data: two 64x64 cameras side by side, short clips
    cfg.cache.image_height = 64
    cfg.cache.image_width = 64
    cfg.cache.num_frames = 9
    cfg.cache.frame_stride = 2
    cfg.cache.action_horizon = 16
    cfg.cache.sample_stride = 4  # half the clips of stride 2: the VAE encode is most of the cache time
    cfg.cache.samples_per_shard = 128
    cfg.cache.encode_batch_size = 8
    # a small random Wan VAE (same class, 8x spatial / 4x temporal)
    cfg.cache.vae.base_dim = 16
    cfg.cache.vae.dim_mult = [1, 2, 2, 2]
    cfg.cache.vae.num_res_blocks = 1
    cfg.cache.text.encoder = TextEncoder.minilm
    cfg.cache.text.max_tokens = 32  # the template alone is ~16 MiniLM tokens; 32 keeps the task words
    cfg.cache.text.dim = 384
    # a small random Wan DiT, trained fully since nothing is pretrained
    bb = cfg.model.backbone
    bb.num_layers = 4
    bb.num_attention_heads = 4
    bb.attention_head_dim = 32
    bb.ffn_dim = 256
    bb.text_dim = 384
    bb.freq_dim = 64
    bb.freeze = False
    bb.lora_rank = 8
    bb.lora_alpha = 16
    bb.adapter_layers = [1, 2, 3]
    bb.adapter_dim = 32
    ex = cfg.model.expert
    ex.num_queries = 4
    ex.num_heads = 4
    ex.compress_dim = 256
    ex.hidden_dim = 256
    ex.step_embed_dim = 64
    cfg.model.action_dim = 4
    cfg.model.proprio_dim = 4
    cfg.model.action_horizon = 16
    cfg.model.action_weighted_steps = 0
    # training and evaluation sized for minutes on a laptop-class CPU
    tr = cfg.train
    tr.steps = 1000
    tr.batch_size = 8
    tr.lr = 3e-4
    tr.warmup_steps = 20
    tr.num_workers = 2
    tr.checkpoint_every = 250
    tr.checkpoint_blocks = 0  # a few MiB of activations: recomputing would only cost time
    tr.keep_shards_in_memory = True  # demo-sized caches (the bench one: 0.4 GB) fit in RAM
    tr.log_every = 10
    tr.plot_every = 250
    cfg.eval.episodes_per_task = 10  # 30 episodes: a 95% interval about 30 points wide
    cfg.eval.max_steps = 200
    cfg.eval.replan_every = 8
    cfg.eval.num_workers = 2
    return cfg


MT10 = ["reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3", "drawer-close-v3",
        "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3"]


def bench() -> Config:
    """The demo model trained on MetaWorld MT10 for ~60 minutes of this 2-core CPU, evaluated at 50 episodes/task."""
    cfg = demo()
    cfg.preset, cfg.workdir = "bench", "work-bench"
    # The scripted experts solve every MT10 task well within demo.max_steps=200; failed layouts are redrawn.
    cfg.demo.tasks = list(MT10)
    # every clip start, as the recorded results were cached (the demo's stride 4 halves its cache time)
    cfg.cache.sample_stride = 2
    # 12000 steps x 16 samples fit the 60-minute training budget of the benchmark on a quiet 2-core CPU, for
    # both arms (with and without the video loss); benchmarks/metaworld.py prints the measured time.
    cfg.train.steps = 12000
    # The expert also reads the current frame's keypoints and the robot state (model.shortcut, not in the
    # paper): the random VAE's 8x8 latents lose where small things are (benchmarks/RESULTS.md).
    cfg.cache.current_frames = True
    cfg.model.shortcut.enabled = True
    cfg.train.warmup_steps = 200
    cfg.train.checkpoint_every = 1000
    cfg.train.log_every = 50
    cfg.train.plot_every = 1000
    # Evaluation seeds come from eval.seed and are checked against every demo seed (pipeline.evaluate.demo_seeds).
    cfg.eval.tasks = list(MT10)
    cfg.eval.episodes_per_task = 50
    return cfg


def bench_prior() -> Config:
    """The paper's recipe on MT10 over a video prior and a VAE fitted here to action-free robot video."""
    cfg = bench()
    cfg.preset, cfg.workdir = "bench_prior", "work-bench-prior"
    # the paper's expert alone: no shortcut, so no stored frames either
    cfg.cache.current_frames = False
    cfg.model.shortcut.enabled = False
    # frozen pretrained backbone, LoRA + adapters, video co-training
    bb = cfg.model.backbone
    bb.freeze = True
    bb.lora_rank, bb.lora_alpha = 16, 32
    cfg.model.video_loss_weight = 1.0
    # `pipeline.run` first records the corpus, fits the VAE and pretrains the DiT (`pipeline.prior.chain`); sized to
    # about 4 hours of two cores in all (benchmarks/prior_pilot.md)
    cfg.pretrain.before_run = True
    cfg.corpus.episodes_per_task = 20
    # The VAE keeps Wan's 8x spatial compression: fitted at 4x its latents locate goals better (goal probe), but
    # arm A scored no better on it at 1.8x the training time (docs/options.md, "The prior's VAE fit").
    # the VAE fit: single frames first (the spatial path, what the expert reads), then clips (the temporal layers)
    cfg.vae_fit.max_frames = 8192
    cfg.vae_fit.fit.frame_steps = 800
    cfg.vae_fit.fit.steps = 250
    cfg.vae_fit.fit.batch_size = 4  # clips of 9 frames
    cfg.pretrain.steps = 20000
    cfg.pretrain.val_every = 500
    return cfg


PRESETS: dict[str, Callable[[], Config]] = {"demo": demo, "paper": paper, "bench": bench, "bench_prior": bench_prior}


def describe_presets() -> str:
    """One line per preset: its name and the first line of its docstring."""
    return "\n".join(f"  {name:<8} {(fn.__doc__ or '').strip().splitlines()[0]}" for name, fn in PRESETS.items())

