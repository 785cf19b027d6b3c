"""How close is a trained policy to the expert on the very samples it was trained on? (issue 8)

Closed-loop success mixes two failures: the policy cannot read from the image what
the expert acted on (a goal drawn anew each episode), or it reads it but small
errors compound along the rollout. This separates them offline. For each model it
predicts the action chunk of every sample in its training cache (the frames the
demos recorded, no simulator) and prints, per task, the mean squared error in the
normalized action space ([-1, 1] per dimension, the space the loss is computed in):

- on every sample, for the chunk steps evaluation executes (the first
  `--executed`, `eval.replan_every` by default) and for the rest of the chunk;
- on the first sample of each episode only (frame 0: the expert's first move
  depends only on the layout, so an error here is the layout not being read);
- and, as the yardstick, the error of a policy blind to the scene: the mean
  chunk of the task (per chunk step), computed from the same samples.

`share` = 1 - model / blind: the part of the expert's layout-dependent behaviour
the model reproduces (1 = all of it, 0 = no better than ignoring the images).

`state_only=true` adds a table for a second yardstick (benchmarks/state_baseline.py):
an MLP from the robot state and the instruction alone, fitted on the same samples
for `train.steps` steps of the global batch. What a model does better than it, the
model read from the images. Read frame 0 against it, not against blind: every
episode starts in the same robot state, so its frame-0 chunk is the task's mean
first chunk, and only the gap to that is the layout read from the images.

    .venv/bin/python benchmarks/action_error.py preset=bench model=models:/light-wam/1 [model=... ...] \
        [state_only=true] [key=value ...]
"""

from __future__ import annotations

import platform
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:] = [str(REPO)] + [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]

import torch  # noqa: E402

from pipeline import eval_tracking, tracking  # noqa: E402
from pipeline.cli import parse_or_exit  # noqa: E402
from pipeline.policy_bundle import load_policy  # noqa: E402
from stages.cache_loader import CacheDataset, open_cache, read_shard  # noqa: E402

from benchmarks.state_baseline import fit_state_only  # noqa: E402


@dataclass
class TaskErrors:
    """Summed squared errors (over action dims, averaged later) and counts, per task."""

    sums: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    def add(self, key: str, sq_err: torch.Tensor, mask: torch.Tensor) -> None:
        self.sums[key] += float((sq_err * mask).sum())
        self.counts[key] += float(mask.sum())

    def mean(self, key: str) -> float:
        return self.sums[key] / self.counts[key] if self.counts[key] else float("nan")


def load_samples(cfg) -> tuple[dict[str, list[dict]], str]:
    """All cached samples grouped by task text, and the cache fingerprint."""
    handle = open_cache(cfg)
    task_of = {key: task for task, key in handle.manifest["text_keys"].items()}
    by_task: dict[str, list[dict]] = defaultdict(list)
    for raw_key, sample in _with_text_keys(handle):
        by_task[task_of[raw_key]].append(sample)
    return by_task, handle.fingerprint


def _with_text_keys(handle):
    """(text key, tensor sample) for every sample; the text key names the task."""
    ds = CacheDataset(handle)
    for path in handle.shard_paths:
        for raw in read_shard(path):
            yield raw["meta"]["text_key"], ds.to_tensors(raw)


def blind_chunks(by_task: dict[str, list[dict]]) -> dict[str, torch.Tensor]:
    """Per task, the mean normalized chunk over its samples (masked per step): a policy that ignores the scene."""
    out = {}
    for task, samples in by_task.items():
        acts = torch.stack([s["actions"] for s in samples])            # [N, H, A]
        mask = torch.stack([s["action_mask"] for s in samples]).float()  # [N, H]
        out[task] = (acts * mask[..., None]).sum(0) / mask.sum(0).clamp(min=1)[:, None]
    return out


@torch.inference_mode()
def errors_of(model, by_task: dict[str, list[dict]], blind: dict[str, torch.Tensor], executed: int,
              batch_size: int = 64) -> dict[str, TaskErrors]:
    """Squared errors of the model and of the blind chunk, per task, on the groups the table shows."""
    out: dict[str, TaskErrors] = {}
    for task, samples in by_task.items():
        errs = out[task] = TaskErrors()
        for i in range(0, len(samples), batch_size):
            chunk = samples[i:i + batch_size]
            batch = {k: torch.stack([s[k] for s in chunk]) for k in ("current_latent", "proprio", "text", "text_mask")}
            param = next(model.parameters())
            batch = {k: (v.to(param.device, param.dtype) if v.is_floating_point() else v.to(param.device))
                     for k, v in batch.items()}
            pred = model.predict_actions(batch).float().cpu()
            target = torch.stack([s["actions"] for s in chunk])
            mask = torch.stack([s["action_mask"] for s in chunk]).float()
            first = torch.tensor([int(s["frame"]) == 0 for s in chunk], dtype=torch.float32)[:, None]
            steps = torch.arange(mask.shape[1])
            groups = {"executed": mask * (steps < executed), "rest": mask * (steps >= executed),
                      "frame0": mask * (steps < executed) * first}
            for who, guess in (("model", pred), ("blind", blind[task].expand_as(target))):
                sq = (guess - target).pow(2).mean(-1)  # [B, H]
                for name, m in groups.items():
                    errs.add(f"{who}/{name}", sq, m)
    return out


def table(label: str, errs: dict[str, TaskErrors], executed: int) -> str:
    head = (f"| task | executed steps 0-{executed - 1}: model / blind / share | rest of the chunk: model / blind / share "
            f"| frame 0 only: model / blind / share |")
    lines = [f"**{label}**", "", head, "| --- | ---: | ---: | ---: |"]
    totals = TaskErrors()
    for task in sorted(errs):
        e = errs[task]
        cells = [_cell(e, g) for g in ("executed", "rest", "frame0")]
        lines.append(f"| {task} | " + " | ".join(cells) + " |")
        for key in e.sums:
            totals.sums[key] += e.sums[key]
            totals.counts[key] += e.counts[key]
    lines.append("| **all** | " + " | ".join(_cell(totals, g) for g in ("executed", "rest", "frame0")) + " |")
    return "\n".join(lines)


def _cell(e: TaskErrors, group: str) -> str:
    model, blind = e.mean(f"model/{group}"), e.mean(f"blind/{group}")
    return f"{model:.4f} / {blind:.4f} / {1 - model / blind:.2f}" if blind > 0 else f"{model:.4f} / {blind:.4f} / -"


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    models = [a.split("=", 1)[1] for a in args if a.startswith("model=")]
    state_only = "state_only=true" in args
    if not models and not state_only:
        raise SystemExit("usage: action_error.py preset=bench model=models:/light-wam/N [model=...] [state_only=true] "
                         "[key=value ...]")
    cfg = parse_or_exit([a for a in args if not a.startswith(("model=", "state_only="))])
    executed = cfg.eval.replan_every
    tracking.setup(cfg)
    t0 = time.perf_counter()
    by_task, fingerprint = load_samples(cfg)
    blind = blind_chunks(by_task)
    n = sum(len(v) for v in by_task.values())
    print(f"cache {fingerprint}: {n} samples, {len(by_task)} tasks, loaded in {time.perf_counter() - t0:.0f} s")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"normalized actions, mean squared error per action dimension; executed steps = eval.replan_every = {executed}")
    for uri in models:
        ref = eval_tracking.resolve(uri)
        loaded = load_policy(ref.bundle, device=cfg.model.device)
        if loaded.info.cache_fingerprint != fingerprint:
            raise SystemExit(f"{uri} was trained on cache {loaded.info.cache_fingerprint}, not on {fingerprint}: "
                             "pass the overrides it was trained with")
        t0 = time.perf_counter()
        errs = errors_of(loaded.policy.model, by_task, blind, executed)
        print(f"\n{table(f'{uri} ({ref.label}), {time.perf_counter() - t0:.0f} s', errs, executed)}")
    if state_only:
        tr = cfg.train
        batch = tr.batch_size * tr.num_workers * tr.grad_accum
        t0 = time.perf_counter()
        policy = fit_state_only([s for v in by_task.values() for s in v], tr.steps, batch, tr.lr,
                                cfg.model.action_weighted_steps, tr.seed)
        errs = errors_of(policy, by_task, blind, executed)
        label = f"state only (no image): MLP on state + instruction, {tr.steps} steps x {batch}, {time.perf_counter() - t0:.0f} s"
        print(f"\n{table(label, errs, executed)}")


if __name__ == "__main__":
    main()
