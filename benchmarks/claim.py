"""The paper's claim on MetaWorld MT10 (issue 33): the pretrained prior against a random one and against action only.

`python -m benchmarks.claim [--arms A20,A20s1,B20,C20,D20,A5,C5] [--tasks T ...] [--episodes N] [--steps N] [key=value ...]`

Arms, each one `python -m pipeline.run` in one workdir (one MLflow experiment):
  A  `preset=bench_prior`: the fitted VAE and the pretrained DiT, frozen; LoRA, adapters and the paper's
     expert trained; video co-training on (the prior's chain runs first, once, and is reused)
  B  A without the video loss (`model.video_loss_weight=0`)
  C  A on a random DiT and a random VAE (`pretrain.before_run=false`), everything else as A
  D  the best command inside the hour (`preset=bench`, leaves the paper's model): the reference
A key is arm + demos per task (+ `s1` for training seed 1). `--steps` sets A-C's steps and gives D as many
training samples. Every `key=value` is passed to every arm (a pilot scales the prior down this way); a rerun
skips whatever is done. It prints the tables and the targets, writes one section into the dated log
(`docs/results-log.md`, `--results`), draws the bar chart (`--figure`) and logs both to an MLflow run
`claim` beside the arms' runs, which it tags `lightwam.claim_arm`.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from benchmarks import machine
from benchmarks.metaworld import (Arm, ArmResult, interval, parse_with_overrides, read_arm, run_pipeline,
                                  update_results, wilson_cell)
from sim.evaluation import wilson_interval

REPO = Path(__file__).resolve().parents[1]
POSITION_TASKS = ("reach-v3", "push-v3", "pick-place-v3", "peg-insert-side-v3")  # the goal is read from pixels
BEST = ("model.video_loss_weight=0", "model.backbone.num_layers=1", "model.backbone.adapter_layers=[0]",
        "model.backbone.lora_rank=0", "train.num_workers=1", "train.batch_size=8", "train.pixel_shift=4",
        "train.lr=1e-3", "train.steps=96000")
ARM_OVERRIDES = {
    "A": ("preset=bench_prior",),
    "B": ("preset=bench_prior", "model.video_loss_weight=0"),
    "C": ("preset=bench_prior", "pretrain.before_run=false"),
    "D": ("preset=bench", *BEST),
}
DEFAULT_ARMS = "A20,A20s1,B20,C20,D20,A5,C5"


@dataclass(frozen=True)
class ArmKey:
    arm: str  # A, B, C or D
    demos: int
    seed: int

    @classmethod
    def parse(cls, key: str) -> ArmKey:
        body, _, seed = key.partition("s")
        if not body or body[0] not in ARM_OVERRIDES or not body[1:].isdigit() or (seed and not seed.isdigit()):
            raise SystemExit(f"arm {key!r}: expected arm A-D, demos per task, optional s<seed> (e.g. A20, A20s1)")
        return cls(body[0], int(body[1:]), int(seed or 0))

    @property
    def label(self) -> str:
        return f"{self.arm} {self.demos} demos" + (f" seed {self.seed}" if self.seed else "")


def arm_overrides(key: ArmKey, args: argparse.Namespace) -> list[str]:
    """The arm's full `pipeline.run` overrides: the arm's, then the flags', then the passthrough (which win)."""
    out = list(ARM_OVERRIDES[key.arm]) + [f"workdir={args.workdir}", f"demo.episodes_per_task={key.demos}"]
    if key.seed:
        out.append(f"train.seed={key.seed}")
    if args.tasks:
        tasks = "[" + ",".join(args.tasks) + "]"
        out += [f"demo.tasks={tasks}", f"eval.tasks={tasks}"]
    if args.episodes is not None:
        out.append(f"eval.episodes_per_task={args.episodes}")
    if args.steps is not None:  # D trains batch 8 on one worker, A-C batch 8 on two: the same samples
        out.append(f"train.steps={args.steps * 2 if key.arm == 'D' else args.steps}")
    return out + list(args.overrides)


def pooled(result: ArmResult, tasks=None) -> tuple[int, int]:
    cells = [v for t, v in result.successes.items() if tasks is None or t in tasks]
    return sum(k for k, _ in cells), sum(n for _, n in cells)


def rate(result: ArmResult, tasks=None) -> float:
    k, n = pooled(result, tasks)
    return k / n if n else float("nan")


def targets(results: dict[ArmKey, ArmResult]) -> list[str]:
    """The issue's targets, each said plainly: reached or missed, and by how much."""
    def get(arm, demos):
        return results.get(ArmKey(arm, demos, 0))

    lines = []
    a20, b20, c20, a5, c5 = get("A", 20), get("B", 20), get("C", 20), get("A", 5), get("C", 5)
    if a20:
        ok = rate(a20) >= 0.85
        lines.append(f"- A at 20 demos >= 85%: {'reached' if ok else 'missed'} ({rate(a20):.1%}"
                     + ("" if ok else f", {85 - 100 * rate(a20):.1f} points short") + ")")
    if a20 and c20:
        gap = 100 * (rate(a20) - rate(c20))
        lines.append(f"- A - C at 20 demos >= 15 points: {'reached' if gap >= 15 else 'missed'} ({gap:+.1f} points)")
    if a5 and c5:
        ratio = rate(a5) / rate(c5) if rate(c5) else float("inf")
        lines.append(f"- A >= 2 x C at 5 demos: {'reached' if ratio >= 2 else 'missed'} "
                     f"({rate(a5):.1%} vs {rate(c5):.1%}, x{ratio:.2f})")
    if a20 and b20:
        (la, ha), (lb, hb) = wilson_interval(*pooled(a20)), wilson_interval(*pooled(b20))
        verdict = "holds (intervals apart)" if la > hb else ("reversed (intervals apart)" if lb > ha else
                                                                "not shown (intervals overlap)")
        lines.append(f"- A above B (co-training): {verdict}: {rate(a20):.1%} ({la:.0%}-{ha:.0%}) vs "
                     f"{rate(b20):.1%} ({lb:.0%}-{hb:.0%})")
    return lines


def markdown(results: dict[ArmKey, ArmResult], commands: dict[ArmKey, list[str]], machine_line: str) -> str:
    keys = list(results)
    lines = [f"- machine: {machine_line}", "", "| arm | command | MLflow run | cache | training wall | samples/s |",
             "| --- | --- | --- | --- | ---: | ---: |"]
    for key in keys:
        r = results[key]
        lines.append(f"| {key.label} | `python -m pipeline.run {shlex.join(commands[key])}` | {r.run_name} "
                     f"({r.run_id[:8]}) | {r.fingerprint[:12]} | {r.train_seconds / 60:.1f} min | {r.samples_per_s:.1f} |")
    lines += ["", "| task | " + " | ".join(k.label for k in keys) + " |", "| --- |" + " ---: |" * len(keys)]
    for task in results[keys[0]].successes:
        lines.append(f"| {task} | " + " | ".join(wilson_cell(*results[k].successes.get(task, (0, 0))) for k in keys) + " |")
    for name, tasks in (("position tasks", POSITION_TASKS), ("**mean**", None)):
        lines.append(f"| {name} | " + " | ".join(f"{rate(results[k], tasks):.1%} ({interval(*pooled(results[k], tasks))})"
                                                for k in keys) + " |")
    lines += ["", "Cells: successes/episodes = rate (95% Wilson interval); the position tasks "
              f"({', '.join(POSITION_TASKS)}) and the mean pool their episodes.", "", "Targets:", *targets(results)]
    return "\n".join(lines) + "\n"


def bar_chart(results: dict[ArmKey, ArmResult], path: Path):
    """One group of bars per task (and the pooled mean), one bar per arm, 95% Wilson intervals as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(results)
    tasks = list(results[keys[0]].successes) + ["mean"]
    fig, ax = plt.subplots(figsize=(min(16.0, max(8.0, 0.22 * len(tasks) * len(keys))), 4.5))
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        cells = [results[key].successes.get(t, (0, 0)) for t in tasks[:-1]] + [pooled(results[key])]
        rates = [k / n if n else 0.0 for k, n in cells]
        bounds = [wilson_interval(k, n) if n else (0.0, 0.0) for k, n in cells]
        err = [[r - lo for r, (lo, _) in zip(rates, bounds)], [hi - r for r, (_, hi) in zip(rates, bounds)]]
        ax.bar([t + (i - (len(keys) - 1) / 2) * width for t in range(len(tasks))], rates, width, yerr=err,
               capsize=2, label=key.label)
    ax.set_xticks(range(len(tasks)), [t.removesuffix("-v3") for t in tasks], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.22)  # room for the legend above the bars
    ax.set_ylabel("closed-loop success (95% Wilson interval)")
    ax.set_title("MetaWorld MT10: pretrained prior (A), no video loss (B), random prior (C), best command (D)",
                 fontsize=9)
    ax.legend(fontsize=7, ncol=len(keys), loc="upper left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def log_to_mlflow(results: dict[ArmKey, ArmResult], commands: dict[ArmKey, list[str]], table: str, figure: Path) -> str:
    """Tag every arm's run with its arm and log the table and the chart to a `claim` run in the same experiment."""
    import mlflow
    from mlflow import MlflowClient

    from pipeline import tracking
    from pipeline.cli import load_config

    first = next(iter(results))
    cfg, _ = load_config(commands[first])
    experiment = tracking.setup(cfg)
    client = MlflowClient()
    for key, r in results.items():
        client.set_tag(r.run_id, "lightwam.claim_arm", key.label)
    with mlflow.start_run(experiment_id=experiment, run_name="claim") as run:
        mlflow.set_tags({"lightwam.claim_arms": ", ".join(k.label for k in results)})
        mlflow.log_metrics({f"success_{k.arm}{k.demos}" + (f"_s{k.seed}" if k.seed else ""): rate(r)
                            for k, r in results.items()})
        mlflow.log_text(table, "claim.md")
        mlflow.log_artifact(str(figure))
        return run.info.run_id


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arms", default=DEFAULT_ARMS, help=f"comma-separated arm keys (default {DEFAULT_ARMS})")
    parser.add_argument("--workdir", default="work-claim", help="one workdir for every arm: one MLflow experiment")
    parser.add_argument("--tasks", nargs="+", help="MetaWorld tasks (demos and evaluation); default: MT10")
    parser.add_argument("--episodes", type=int, help="evaluation episodes per task (preset: 50)")
    parser.add_argument("--steps", type=int, help="A-C training steps (preset: 12000); D gets as many samples")
    parser.add_argument("--results", type=Path, default=REPO / "docs" / "results-log.md", help="markdown log to update")
    parser.add_argument("--figure", type=Path, default=REPO / "benchmarks" / "figures" / "claim.png")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parse_with_overrides(parser, argv)
    args.keys = [ArmKey.parse(k.strip()) for k in args.arms.split(",") if k.strip()]
    return args


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    machine_line = machine.describe()
    results: dict[ArmKey, ArmResult] = {}
    commands: dict[ArmKey, list[str]] = {}
    for key in args.keys:
        commands[key] = arm_overrides(key, args)
        seconds, run_id = run_pipeline(commands[key])
        results[key] = read_arm(Arm(key.label, tuple(commands[key])), commands[key], seconds, run_id)
    table = markdown(results, commands, machine_line)
    print("\n" + table)
    if args.no_write:
        return
    figure = bar_chart(results, args.figure)
    run_id = log_to_mlflow(results, commands, table, figure)
    command = shlex.join(["python", "-m", "benchmarks.claim", *argv])
    update_results(args.results, f"{datetime.now():%Y-%m-%d %H:%M}", command,
                   table + f"\nChart: `{figure.relative_to(REPO) if figure.is_relative_to(REPO) else figure}`; "
                   f"MLflow run `claim` {run_id[:8]}.\n")
    print(f"written to {args.results} and {figure}; MLflow run {run_id}")


if __name__ == "__main__":
    main()
