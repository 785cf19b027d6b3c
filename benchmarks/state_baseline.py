"""A yardstick for benchmarks/action_error.py: what the robot state and the instruction explain, with no image.

The blind yardstick (the task's mean chunk) knows neither the scene nor where the
robot is. Much of an expert's chunk follows from the robot's own state alone (the
phase of the motion: where the hand is, whether the gripper is closed), which the
policy also receives. This fits a small MLP from (normalized state, which
instruction) to the normalized chunk on the same samples, with the same number of
steps and samples per step as the model's training, so a model's error can be read
against a policy that never looks at the cameras. Whatever the model does better
than this, it read from the images.

Run as a script, it fits the MLP on the cache `preset=...` names and rolls it out
on the same held-out layouts `pipeline.evaluate` uses, so its success rate stands
beside a trained policy's (its own table; nothing is registered or crowned):

    MUJOCO_GL=egl .venv/bin/python benchmarks/state_baseline.py preset=bench [key=value ...]
"""

from __future__ import annotations

import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]


def text_code(text: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
    """[B, L, D], [B, L] -> [B, D]: the mean over real tokens, a fingerprint of the instruction."""
    from model.light_wam import instruction_code  # the repo is on sys.path once main() or a test set it

    return instruction_code(text, text_mask)


class StateOnlyPolicy(nn.Module):
    """(proprio [B, P], instruction) -> chunk [B, H, A]; the instruction enters as a one-hot of the known tasks."""

    def __init__(self, task_codes: torch.Tensor, proprio_dim: int, horizon: int, action_dim: int,
                 hidden: int = 256) -> None:
        super().__init__()
        self.register_buffer("task_codes", task_codes)  # [K, D]: one text fingerprint per task
        self.horizon, self.action_dim = horizon, action_dim
        self.net = nn.Sequential(nn.Linear(proprio_dim + len(task_codes), hidden), nn.GELU(),
                                 nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, horizon * action_dim))

    def task_onehot(self, codes: torch.Tensor) -> torch.Tensor:
        """[B, D] text fingerprints -> [B, K]: the nearest known task."""
        nearest = torch.cdist(codes.float(), self.task_codes).argmin(1)
        return nn.functional.one_hot(nearest, len(self.task_codes)).float()

    def forward(self, proprio: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([proprio.float(), onehot], 1)).view(-1, self.horizon, self.action_dim)

    @torch.inference_mode()
    def predict_actions(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The same entry point as LightWAM's, on the keys it needs."""
        return self(batch["proprio"], self.task_onehot(text_code(batch["text"], batch["text_mask"])))


def stacked(samples: list[dict], weighted_steps: int = 0) -> tuple[torch.Tensor, ...]:
    """proprio, actions, loss mask (the first `weighted_steps` steps, 0 = all, as the model's loss), text codes."""
    proprio = torch.stack([s["proprio"] for s in samples]).float()
    actions = torch.stack([s["actions"] for s in samples]).float()
    mask = torch.stack([s["action_mask"] for s in samples]).float()
    if weighted_steps > 0:
        mask = mask * (torch.arange(mask.shape[1]) < weighted_steps)
    codes = torch.stack([text_code(s["text"][None], s["text_mask"][None])[0] for s in samples]).float()
    return proprio, actions, mask, codes


def task_balanced_weights(codes: torch.Tensor) -> torch.Tensor:
    """[N, D] instruction codes -> [N] sampling weights under which every task is drawn equally often."""
    _, task, counts = torch.unique(codes, dim=0, return_inverse=True, return_counts=True)
    return 1.0 / counts[task].float()


def fit_state_only(samples: list[dict], steps: int, batch_size: int, lr: float = 3e-4,
                   weighted_steps: int = 0, seed: int = 0) -> StateOnlyPolicy:
    """AdamW on the masked chunk MSE."""
    proprio, actions, mask, codes = stacked(samples, weighted_steps)
    task_codes = torch.unique(codes, dim=0)
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():  # a seeded init that leaves the caller's random state alone
        torch.manual_seed(seed)
        policy = StateOnlyPolicy(task_codes, proprio.shape[1], actions.shape[1], actions.shape[2])
    onehot = policy.task_onehot(codes)
    opt = torch.optim.AdamW(policy.parameters(), lr=lr)
    for _ in range(steps):
        idx = torch.randint(0, len(samples), (batch_size,), generator=gen)
        sq = (policy(proprio[idx], onehot[idx]) - actions[idx]).pow(2).mean(-1)
        loss = (sq * mask[idx]).sum() / mask[idx].sum().clamp(min=1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return policy.eval()


class StateOnlyChunkPolicy:
    """The fitted MLP as an evaluation-loop policy (`sim.policies.ChunkPolicy`): raw state in, raw chunk out."""

    needs_expert = False

    def __init__(self, policy: StateOnlyPolicy, stats: dict, text: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
        from model.policy import MinMax

        self.policy = policy
        self.state_norm, self.action_norm = MinMax.from_stats(stats["proprio"]), MinMax.from_stats(stats["actions"])
        self.codes = {task: text_code(torch.from_numpy(e)[None], torch.from_numpy(m)[None])[0] for task, (e, m) in text.items()}

    def act_batch(self, requests) -> list[np.ndarray]:
        from sim.policies import require_known

        require_known([r.instruction for r in requests], self.codes)
        state = self.state_norm.normalize(torch.from_numpy(np.stack([r.state for r in requests])).float())
        onehot = self.policy.task_onehot(torch.stack([self.codes[r.instruction] for r in requests]))
        with torch.inference_mode():
            chunks = self.action_norm.denormalize(self.normalized_chunks(requests, state, onehot))
        return list(chunks.numpy())

    def normalized_chunks(self, requests, state: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        """Normalized chunks from the normalized state and the instruction (an image policy adds the frames)."""
        return self.policy(state, onehot)


def load_samples(cfg) -> tuple:
    """(cache handle, every cached sample as tensors), for the cache `cfg` names."""
    from stages.cache_loader import CacheDataset, open_cache, read_shard

    handle = open_cache(cfg)
    ds = CacheDataset(handle)
    return handle, [ds.to_tensors(raw) for path in handle.shard_paths for raw in read_shard(path)]


def roll_out(cfg, handle, policy: StateOnlyChunkPolicy, name: str, described: str, meta: dict) -> None:
    """The fitted policy on the layouts `pipeline.evaluate` uses; results in <workdir>/eval/<name>.

    `eval.layouts=demo` replays the demonstrations' own layouts instead (name suffix `-demo-layouts`): a policy
    that fails there too is not fitting its data closed loop, one that succeeds only there is not generalising."""
    from pipeline import evaluate as ev
    from pipeline.config import EvalLayouts
    from pipeline.console import console
    from pipeline.workdir import workdir
    from sim.evaluation import plan_episodes
    from sim.observation import camera_name
    from sim.rollout import LoopSettings

    cameras = [camera_name(c) for c in handle.manifest["identity"]["data.cameras"]]
    envs = ev.env_specs(cfg, cameras, sorted(policy.codes))
    on_demo_layouts = cfg.eval.layouts == EvalLayouts.demo
    if on_demo_layouts:
        episodes, name = ev.demo_layout_episodes(cfg, envs), f"{name}-demo-layouts"
    else:
        episodes = plan_episodes(envs, cfg.eval.episodes_per_task, cfg.eval.seed, 0, ev.demo_seeds(cfg))
    settings = LoopSettings(cfg.cache.image_height, cfg.cache.image_width, cfg.eval.replan_every, cfg.demo.fps,
                            current_scale=cfg.cache.current_frame_scale if cfg.cache.current_frames else 1)
    console.print(f"{described} on cache {handle.fingerprint[:12]}; {len(envs)} task(s) x "
                  f"{cfg.eval.episodes_per_task} episodes on {cfg.eval.layouts.value} layouts (seed {cfg.eval.seed}), "
                  f"replan every {cfg.eval.replan_every}")
    summary, results = ev.run(cfg, policy, episodes, settings)
    meta = meta | {"cache": handle.fingerprint, "episodes_per_task": cfg.eval.episodes_per_task,
                   "seed": cfg.eval.seed, "replan_every": cfg.eval.replan_every, "layouts": cfg.eval.layouts.value}
    path = ev.write_results(workdir(cfg) / "eval" / name, summary, results, meta)
    ev.print_table(summary)
    console.print(f"results: {path}")


def prepare(overrides: list[str]) -> tuple:
    """(config, samples per step, cache handle, samples) for a baseline script."""
    from pipeline.cli import parse_or_exit
    from pipeline.console import console

    cfg = parse_or_exit(overrides)
    tr = cfg.train
    handle, samples = load_samples(cfg)
    console.print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    return cfg, tr.batch_size * tr.num_workers * tr.grad_accum, handle, samples


def main(argv: list[str] | None = None) -> None:
    sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]
    cfg, batch, handle, samples = prepare(list(sys.argv[1:] if argv is None else argv))
    tr = cfg.train
    t0 = time.perf_counter()
    policy = fit_state_only(samples, tr.steps, batch, tr.lr, cfg.model.action_weighted_steps, tr.seed)
    fit_s = time.perf_counter() - t0
    text = {task: handle.text[key] for task, key in handle.manifest["text_keys"].items()}
    roll_out(cfg, handle, StateOnlyChunkPolicy(policy, handle.stats, text), f"state-only-{handle.fingerprint[:12]}-{tr.steps}",
             f"state-only MLP (no image): {len(samples)} samples, {tr.steps} steps x {batch}, fitted in {fit_s:.0f} s",
             {"model": "state-only MLP", "steps": tr.steps, "batch": batch})


if __name__ == "__main__":
    main()
