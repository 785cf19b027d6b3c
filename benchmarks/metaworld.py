"""Policy quality on MetaWorld MT10 and the video co-training ablation (issue 8).

`python -m benchmarks.metaworld [--tasks T ...] [--episodes N] [--demos N] [--steps N] [key=value ...]`

Runs the normal command twice, `python -m pipeline.run preset=bench [overrides]`,
once for the full model and once with `model.video_loss_weight=0` (action only):
same demos, cache, seed and step budget, so the second run reuses the dataset
and the shards and trains a new MLflow run beside the first. It then reads each
run's closed-loop success from MLflow and prints a markdown table (per task,
95% Wilson intervals) that it also inserts into the dated log `docs/results-log.md`
(`--results PATH` writes elsewhere, `--no-write` nowhere). The flags scale the
preset down for a pilot; anything `key=value` is passed through as an override.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from benchmarks import machine
from sim.evaluation import wilson_interval

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RESULTS = REPO / "docs" / "results-log.md"
MARKER = "<!-- benchmarks/metaworld.py inserts results below this line, newest first -->"
HEADER = f"""# Benchmark results: policy quality on MetaWorld MT10

Closed-loop success of the `bench` preset (the demo model trained on the ten
MetaWorld MT10 tasks from 20 scripted-expert demonstrations per task, two 64x64
cameras (`workspace`, a close view of the table, and the wrist camera
`gripperPOV`), the robot state and the current frame read directly by the expert,
one multi-task policy conditioned on the instruction) and of the same model
trained without the video loss (`model.video_loss_weight=0`): the paper's
co-training claim, measured with the same cache, seed and training budget.
Evaluation layouts come from `eval.seed` and never reuse a demonstration layout.
Intervals are 95% Wilson score intervals over the evaluation episodes.

Reproduce (on this 2-core CPU with nothing else running, estimated from the pilots
below: demos ~7 min, cache ~8 min, then per arm 35-50 min of training and
~20-25 min of evaluation for its 500 episodes; about 2.5 hours in all, much longer
on a loaded machine; a rerun skips whatever is done):

```bash
.venv/bin/python -m benchmarks.metaworld
```

Each section below is one invocation: the machine, the exact command and the
table it printed. `python -m pipeline.compare preset=bench` shows the same runs
from MLflow.

{MARKER}

_No measurement yet: the first run replaces this line with its section._
"""


@dataclass(frozen=True)
class Arm:
    name: str
    overrides: tuple[str, ...]


ARMS = (Arm("full (video + action)", ()), Arm("action only", ("model.video_loss_weight=0",)))


@dataclass
class ArmResult:
    """What one arm's training run holds in MLflow once `pipeline.run` has trained and evaluated it."""

    arm: Arm
    run_id: str
    run_name: str
    fingerprint: str
    successes: dict[str, tuple[int, int]]  # task -> (successes, episodes)
    success_mean: float
    train_seconds: float  # MLflow run start -> end: Ray Train start-up, the loop, checkpoints, the bundle
    samples_per_s: float  # mean over the logged windows
    pipeline_seconds: float  # the whole `pipeline.run` subprocess of this invocation (skipped steps are fast)


def interval(k: int, n: int) -> str:
    low, high = wilson_interval(k, n)
    return f"{low:.0%}-{high:.0%}"


def wilson_cell(k: int, n: int) -> str:
    return f"{k}/{n} = {k / n:.0%} ({interval(k, n)})" if n else "-"


def overrides_from(args: argparse.Namespace) -> list[str]:
    """The pipeline overrides for these flags, after `preset=`; passthrough overrides come last and win."""
    out = [f"preset={args.preset}"]
    if args.tasks:
        tasks = "[" + ",".join(args.tasks) + "]"
        out += [f"demo.tasks={tasks}", f"eval.tasks={tasks}"]
    if args.demos is not None:
        out.append(f"demo.episodes_per_task={args.demos}")
    if args.episodes is not None:
        out.append(f"eval.episodes_per_task={args.episodes}")
    if args.steps is not None:
        out.append(f"train.steps={args.steps}")
    return out + list(args.overrides)


def run_pipeline(overrides: list[str]) -> tuple[float, str]:
    """`python -m pipeline.run` in a subprocess (its own Ray cluster, its own exit), its output passed through;
    returns wall seconds and the MLflow run id its summary names (a preset that pretrains a prior first
    names its run after the prior, which only the run itself knows)."""
    cmd = [sys.executable, "-m", "pipeline.run", *overrides]
    print(f"\n$ {shlex.join(cmd)}", flush=True)
    start = time.perf_counter()
    run_id = ""
    with subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, text=True, bufsize=1) as proc:
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.startswith("MLflow run "):
                run_id = line.split()[2]
    if proc.returncode != 0:
        raise SystemExit(f"pipeline.run failed (exit {proc.returncode}): {shlex.join(cmd)}")
    return time.perf_counter() - start, run_id


def evaluation_mismatch(logged: dict, cfg) -> str:
    """Why a run's last evaluation (its results.json) is not the one `cfg` asks for; empty if it is.

    A model version's run holds only its latest evaluation, so one evaluated again with other
    settings (`pipeline.evaluate ... eval.replan_every=4`) must not be reported as this one.
    """
    wanted = {"episodes_per_task": cfg.eval.episodes_per_task, "seed": cfg.eval.seed,
              "replan_every": cfg.eval.replan_every}
    problems = [f"{key} {logged.get(key)} instead of {value}" for key, value in wanted.items() if logged.get(key) != value]
    missing = sorted(set(cfg.eval.tasks) - set(logged.get("tasks", {})))
    if missing:
        problems.append(f"no result for {', '.join(missing)}")
    return "; ".join(problems)


def read_arm(arm: Arm, overrides: list[str], pipeline_seconds: float, run_id: str = "") -> ArmResult:
    """Find the arm's training run (by id, else by its config-hash name) and read evaluation metrics, checked
    against results.json."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    import mlflow
    from mlflow import MlflowClient

    from pipeline import tracking
    from pipeline.cli import load_config
    from pipeline.train import FINGERPRINT_TAG, RUN_NAME_TAG, run_name

    cfg, _ = load_config(overrides)
    experiment = tracking.setup(cfg)
    client = MlflowClient()
    if run_id:
        runs = [client.get_run(run_id)]
        name = runs[0].data.tags.get(RUN_NAME_TAG, run_id)
    else:
        name = run_name(cfg)
        runs = mlflow.search_runs([experiment], filter_string=f"tags.`{RUN_NAME_TAG}` = '{name}'",
                                  order_by=["attributes.start_time DESC"], max_results=1, output_format="list")
    if not runs:
        raise SystemExit(f"no MLflow run named {name} in {tracking.tracking_uri(cfg)}")
    run = runs[0]
    metrics, n = run.data.metrics, cfg.eval.episodes_per_task
    with tempfile.TemporaryDirectory() as tmp:
        logged = json.loads(Path(mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="eval/results.json", dst_path=tmp)).read_text())
    mismatch = evaluation_mismatch(logged, cfg)
    if mismatch:
        raise SystemExit(f"run {name}: its last evaluation is not the one asked for ({mismatch}); "
                         f"rerun `python -m pipeline.run {' '.join(overrides)}` to evaluate it again")
    successes = {}
    for task in cfg.eval.tasks or list(logged["tasks"]):
        rate = metrics[f"eval/success/{task}"]
        k = round(rate * n)
        if (logged["tasks"][task]["successes"], logged["tasks"][task]["episodes"]) != (k, n):
            raise SystemExit(f"run {name}, {task}: MLflow metric {rate} disagrees with results.json")
        successes[task] = (k, n)
    rates = [m.value for m in client.get_metric_history(run.info.run_id, "samples_per_s")]
    return ArmResult(arm, run.info.run_id, name, run.data.tags.get(FINGERPRINT_TAG, "?"), successes,
                     metrics["eval/success_mean"], (run.info.end_time - run.info.start_time) / 1000,
                     sum(rates) / len(rates) if rates else float("nan"), pipeline_seconds)


def markdown(results: list[ArmResult], overrides: list[str], machine_line: str) -> str:
    """The report: machine, configuration, one row per arm's run, one row per task, the mean."""
    from pipeline.cli import load_config

    cfg, _ = load_config(overrides)
    tc = cfg.train
    samples = tc.steps * tc.num_workers * tc.batch_size * tc.grad_accum
    fps = {r.fingerprint for r in results}
    lines = [
        f"- machine: {machine_line}",
        f"- configuration: `{' '.join(overrides)}`; {len(cfg.demo.tasks)} tasks x {cfg.demo.episodes_per_task} "
        f"demos (seed {cfg.demo.seed}); "
        f"{tc.steps} steps x {tc.num_workers} workers x batch {tc.batch_size} = {samples} "
        f"samples per arm, train seed {tc.seed}; evaluation {cfg.eval.episodes_per_task} episodes per task "
        f"(seed {cfg.eval.seed}), replan every {cfg.eval.replan_every}",
        f"- cache: {', '.join(sorted(f[:12] for f in fps))}" + ("" if len(fps) == 1 else " (NOT shared: arms differ)"),
        "",
        "| arm | extra override | MLflow run | training wall | samples/s | pipeline.run wall |",
        "| --- | --- | --- | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(f"| {r.arm.name} | {' '.join(r.arm.overrides) or '-'} | {r.run_name} ({r.run_id[:8]}) | "
                     f"{r.train_seconds / 60:.1f} min | {r.samples_per_s:.1f} | {r.pipeline_seconds / 60:.1f} min |")
    lines += ["", "| task | " + " | ".join(r.arm.name for r in results) + " |",
              "| --- | " + " | ".join("---:" for _ in results) + " |"]
    for task in results[0].successes:
        lines.append(f"| {task} | " + " | ".join(wilson_cell(*r.successes[task]) for r in results) + " |")
    pooled = [tuple(map(sum, zip(*r.successes.values()))) for r in results]
    lines.append("| **mean** | " + " | ".join(f"**{r.success_mean:.1%}** ({interval(*p)})"
                                            for r, p in zip(results, pooled)) + " |")
    lines += ["", "Cells: successes/episodes = rate (95% Wilson interval); the mean's interval pools all episodes."]
    return "\n".join(lines) + "\n"


def update_results(path: Path, when: str, command: str, body: str) -> None:
    """Insert a `## <when>: `command`` section below MARKER (the file starts as HEADER); it replaces the same command's."""
    heading = f"{when}: `{command}`"
    text = path.read_text() if path.exists() else HEADER
    if MARKER not in text:
        text = text.rstrip("\n") + f"\n\n{MARKER}\n"
    head, _, tail = text.partition(MARKER)
    sections = ("\n" + tail).split("\n## ")[1:]  # anything before the first section (a placeholder) goes
    kept = [s for s in sections if not s.split("\n", 1)[0].rstrip().endswith(f"`{command}`")]
    new = [f"{heading}\n\n{body}"] + kept
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + MARKER + "\n" + "".join(f"\n## {s.rstrip()}\n" for s in new))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="bench")
    parser.add_argument("--tasks", nargs="+", help="MetaWorld tasks (demos and evaluation); default: the preset's MT10")
    parser.add_argument("--episodes", type=int, help="evaluation episodes per task (preset: 50)")
    parser.add_argument("--demos", type=int, help="demonstrations per task (preset: 20)")
    parser.add_argument("--steps", type=int, help="training steps per arm (preset: 12000)")
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    return parse_with_overrides(parser, argv)


def parse_with_overrides(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The flags, and every other argument as a `key=value` pipeline override in `args.overrides`."""
    args, extra = parser.parse_known_args(argv)
    bad = [a for a in extra if "=" not in a or a.startswith("-")]
    if bad:
        parser.error(f"unrecognized arguments {bad}: overrides are key=value")
    args.overrides = extra
    return args


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    base = overrides_from(args)
    machine_line = machine.describe()
    results = []
    for arm in ARMS:
        overrides = base + list(arm.overrides)
        seconds, run_id = run_pipeline(overrides)
        results.append(read_arm(arm, overrides, seconds, run_id))
    table = markdown(results, base, machine_line)
    print("\n" + table)
    if not args.no_write:
        command = shlex.join(["python", "benchmarks/metaworld.py", *argv])
        update_results(args.results, f"{datetime.now():%Y-%m-%d %H:%M}", command, table)
        print(f"written to {args.results}")
    print(f"both runs side by side: python -m pipeline.compare {shlex.join(base)}")


if __name__ == "__main__":
    main()
