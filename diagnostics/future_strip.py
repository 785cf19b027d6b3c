"""What does a trained Light-WAM's video branch expect to happen next? Its predicted future beside the real one.

The action expert reads the DiT states that video co-training shaped; this picture shows what that branch
learned to foresee. For a few evaluation episodes (held-out layouts from `eval.seed`, as `pipeline.evaluate`
plans them; never a demo layout) the policy runs closed loop exactly as evaluation runs it, for the control
steps one cached clip spans (`cache.num_frames` frames every `cache.frame_stride` steps). Rows per episode:

- real: the recorded frames cut, joined, encoded and pooled as the cache makes `video_latents`, decoded again;
- predicted: from the first frame alone (its latent pooled the same way), the instruction and the robot
  state, the full model's video branch generates the rest from noise (`LightWAM.sample_future`,
  `pretrain.sample_steps` Euler steps), decoded by the same VAE.

So both rows pass through the same VAE: their difference is the model's alone. Saved as a PNG (default
`<workdir>/pictures/future_strip_<model>.png`) and logged under `pictures/` of the model version's run.

    python -m diagnostics.future_strip preset=bench_prior workdir=W [model=models:/light-wam/N]
        [tasks=reach-v3,push-v3] [episodes=2] [out=path.png] [any.config=override ...]

`model` defaults to `models:/<tracking.registered_model>@latest`; `tasks` to `eval.tasks`, else the policy's;
`episodes` is the number of episodes in all, the tasks taken in turn.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from mlflow import MlflowClient

from model.checkpoint import load_checkpoint, read_checkpoint
from model.light_wam import LightWAM
from model.pixels import join_cameras
from model.policy import LightWAMPolicy, Observation, camera_name
from model.vae import encode
from pipeline import eval_tracking, tracking
from pipeline.cli import parse_or_exit
from pipeline.config import Config
from pipeline.console import console
from pipeline.evaluate import demo_seeds, env_specs, instruction_of
from pipeline.policy_bundle import PolicyInfo, load_policy
from pipeline.prior.pictures import future_frames_figure
from pipeline.workdir import workdir
from sim.config import EvalLayouts, SimEnv
from sim.evaluation import plan_episodes
from sim.policies import LearnedPolicy
from sim.rollout import EpisodeSpec, LoopSettings, Request, Worker
from stages.decode import clip_pixels
from stages.downsample import pool_latents
from stages.plan import ClipGeometry, plan_episode

CLIP_KEYS = ("cache.num_frames", "cache.frame_stride", "cache.latent_downsample")


@dataclass
class Strip:
    label: str
    current: torch.Tensor  # [1, C, 1, h, w] the live first frame's latent, pooled: frame 0 of `predicted`
    real: torch.Tensor  # [1, C, F, h, w] the recorded clip as the cache's `video_latents`
    predicted: torch.Tensor  # [1, C, F, h, w] the video branch's future from `current`


def plan(cfg: Config, info: PolicyInfo, episodes: int) -> list[EpisodeSpec]:
    """Evaluation's own episodes (same seeds as `pipeline.evaluate`): episode 0 of every task, then 1, ..."""
    envs = env_specs(cfg, [camera_name(c) for c in info.cameras], list(info.tasks))
    missing = sorted({instruction_of(e) for e in envs} - set(info.tasks))
    if missing:
        raise ValueError(f"the policy was not trained on {missing}; it knows {sorted(info.tasks)}")
    per_task = math.ceil(episodes / len(envs))
    specs = plan_episodes(envs, per_task, cfg.eval.seed, per_task, demo_seeds(cfg))  # every one records frames
    return sorted(specs, key=lambda e: e.episode)[:episodes]  # stable: tasks keep their order


def rollout_clip(episode: EpisodeSpec, policy: LightWAMPolicy, settings: LoopSettings, geometry: ClipGeometry
                 ) -> tuple[Request, np.ndarray]:
    """Closed loop as evaluation runs it, for one clip's span: the first request (what the model sees at t=0)
    and the clip's frames [n, H, W * cameras, 3] at render size, past the episode's end clamped as the cache pads."""
    worker, span = Worker([episode], settings), (geometry.num_frames - 1) * geometry.frame_stride
    chunks = LearnedPolicy(policy)  # what evaluation's driver asks for each waiting observation
    step = worker.next(None)
    first = step.request
    assert first is not None
    while step.request is not None and len(worker.frames) <= span:
        step = worker.next(chunks.act_batch([step.request])[0])
    worker.close()
    frames = np.stack(worker.frames)  # frame k: the observation after k control steps (frame 0: the reset)
    return first, frames[plan_episode(len(frames), geometry).video_index[0]]


@torch.inference_mode()
def episode_strip(model: LightWAM, policy: LightWAMPolicy, info: PolicyInfo, episode: EpisodeSpec,
                  settings: LoopSettings, geometry: ClipGeometry, factor: int, steps: int) -> Strip:
    """One episode's real and predicted latent clips, shaped as the cache's `video_latents`."""
    first, frames = rollout_clip(episode, policy, settings, geometry)
    obs = Observation(first.images, first.state, first.instruction)
    first_pixels = policy.pixels([obs]).to(policy.device, policy.vae.dtype)  # resized and joined as act_batch does
    current = torch.as_tensor(pool_latents(policy.predict_latent(first_pixels).float().cpu(), factor))
    dtype = next(model.parameters()).dtype
    text, text_mask = policy.prompts.batch([first.instruction], policy.device, dtype)
    proprio = policy.state_norm.normalize(torch.as_tensor(first.state)[None].to(policy.device)).to(dtype)
    batch = {"video_latents": current.to(policy.device), "text": text, "text_mask": text_mask, "proprio": proprio}
    generator = torch.Generator(device=policy.device).manual_seed(episode.seed)
    predicted = model.sample_future(batch, geometry.latent_frames, steps, generator).float().cpu()
    views = np.split(frames, len(info.cameras), axis=2)  # the cameras apart, resized and joined as the cache does
    joined = join_cameras(views, info.image_height, info.image_width)
    pixels = clip_pixels(joined, np.arange(len(joined))[None]).to(policy.device, policy.vae.dtype)
    real = torch.as_tensor(pool_latents(encode(policy.vae, pixels).float().cpu(), factor))
    label = f"{episode.env.task} #{episode.episode}\nseed {episode.seed}"
    return Strip(label, current, real, predicted)


def check_clip_geometry(run_id: str | None, cfg: Config) -> None:
    """The clip the model trained on is the one drawn: refuse a config whose cache geometry differs from its run's."""
    if not run_id:
        return
    params = MlflowClient().get_run(run_id).data.params
    flat = {"cache.num_frames": cfg.cache.num_frames, "cache.frame_stride": cfg.cache.frame_stride,
            "cache.latent_downsample": cfg.cache.latent_downsample}
    wrong = [f"{k}={params[k]} (config: {flat[k]})" for k in CLIP_KEYS if k in params and params[k] != str(flat[k])]
    if wrong:
        raise ValueError(f"the model's run trained on {', '.join(wrong)}: pass the preset and overrides it used")


def future_strip(cfg: Config, episodes: int = 2, out: str = "") -> tuple[Path, list[Strip]]:
    """Roll out, predict, draw, save and log; returns the PNG's path and the strips."""
    if episodes < 1:
        raise ValueError(f"episodes={episodes}: draw at least one")
    if cfg.eval.env != SimEnv.metaworld or cfg.eval.layouts != EvalLayouts.heldout:
        raise ValueError("future_strip draws held-out MetaWorld layouts only (eval.env=metaworld, eval.layouts=heldout)")
    tracking.setup(cfg)
    ref = eval_tracking.resolve(cfg.eval.model or f"models:/{cfg.tracking.registered_model}@latest")
    check_clip_geometry(ref.run_id, cfg)
    loaded = load_policy(ref.bundle)
    policy, info = loaded.policy, loaded.info
    # the policy holds the truncated, merged inference model: the video head needs the full one
    model_cfg = read_checkpoint(ref.bundle / "model.safetensors")[1]
    model_cfg.device = str(policy.device)
    model = load_checkpoint(ref.bundle / "model.safetensors", cfg=model_cfg, inference=False).eval()
    geometry = ClipGeometry.from_config(cfg.cache)
    settings = LoopSettings(cfg.eval.replan_every, cfg.demo.fps)
    strips = []
    for episode in plan(cfg, info, episodes):
        strips.append(episode_strip(model, policy, info, episode, settings, geometry,
                                    cfg.cache.latent_downsample, cfg.pretrain.sample_steps))
        s = strips[-1]
        # no "frame 0 held still" yardstick: frame 0's latent is one frame's, the later ones 4 frames' each
        error = float((s.predicted - s.real)[:, :, 1:].pow(2).mean())
        console.print(f"{s.label.replace(chr(10), ', ')}: latent MSE of the predicted future frames {error:.3f}")
    step = 4 * geometry.frame_stride  # latent frame k ends at pixel frame 4k of the clip
    title = (f"{ref.label}: video branch's future from the current frame (predicted, {cfg.pretrain.sample_steps} "
             f"Euler steps) vs the closed-loop rollout (real); future k = control step {step}k; "
             f"both decoded by the policy's VAE")
    figure = future_frames_figure(policy.vae, {"video_latents": torch.cat([s.real for s in strips])},
                                  torch.cat([s.predicted for s in strips]), [s.label for s in strips], title)
    path = Path(out) if out else workdir(cfg) / "pictures" / f"future_strip_{ref.label}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=150)
    if ref.run_id:
        MlflowClient().log_artifact(ref.run_id, str(path), "pictures")
        console.print(f"logged to MLflow run {ref.run_id} under pictures/")
    return path, strips


def main(argv: list[str] | None = None) -> tuple[Path, list[Strip]]:
    """`model=`, `tasks=` are `eval.model=`, `eval.tasks=`; `episodes=` and `out=` are this command's own."""
    own, rest = {"episodes": "2", "out": ""}, []
    for arg in list(sys.argv[1:] if argv is None else argv):
        key, _, value = arg.partition("=")
        if key in own:
            own[key] = value
        elif key == "model":
            rest.append(f"eval.{arg}")
        elif key == "tasks":
            rest.append(f"eval.tasks={value if value.startswith('[') else f'[{value}]'}")
        else:
            rest.append(arg)
    cfg = parse_or_exit(rest)
    try:
        path, strips = future_strip(cfg, int(own["episodes"]), own["out"])
    except (ValueError, LookupError, FileNotFoundError, KeyError) as err:
        console.print(f"[red]future strip failed:[/red] {err}")
        raise SystemExit(1) from None
    print(path)
    return path, strips


if __name__ == "__main__":
    main()
