"""`python -m pipeline.run`: the whole flow, end to end, on the resolved config.

demo dataset -> offline cache -> training -> closed-loop evaluation -> summary.
Every step skips work already done (same dataset, cache, run name), so a second
run with the same config finishes in seconds, and an ablation override reuses
the shards and trains a new run. Under `ray job submit` (RAY_ADDRESS set) it
joins that cluster; otherwise it starts an embedded one on 127.0.0.1.
"""

from __future__ import annotations

import json
import signal
import time

from pipeline.cli import parse_or_exit
from pipeline.console import console


def _interrupt_on_sigterm() -> None:
    """SIGTERM (ray job stop, kill, a scheduler) unwinds like Ctrl-C: Ray shut down, MLflow run KILLED."""
    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def earlier_evaluation(cfg, trained) -> dict | None:
    """The results of this very model version under the same evaluation settings, if already computed."""
    from pipeline.workdir import workdir

    path = workdir(cfg) / "eval" / f"{cfg.tracking.registered_model}-v{trained.model_version}" / "results.json"
    if not (trained.skipped and path.exists()):
        return None
    old = json.loads(path.read_text())
    same = {"env": cfg.eval.env.value, "episodes_per_task": cfg.eval.episodes_per_task, "seed": cfg.eval.seed,
            "replan_every": cfg.eval.replan_every}
    if any(old.get(k) != v for k, v in same.items()) or (cfg.eval.tasks and sorted(cfg.eval.tasks) != sorted(old["tasks"])):
        return None
    return old


def main(argv: list[str] | None = None) -> None:
    cfg = parse_or_exit(argv)
    _interrupt_on_sigterm()
    from cluster.ray_session import ray_session
    from pipeline import tracking
    from pipeline.evaluate import evaluate_model
    from pipeline.preprocess import dataset_root, preprocess, print_summary
    from pipeline.train import train
    from pipeline.workdir import workdir

    cfg.workdir = str(workdir(cfg))  # absolute and stable (pipeline.output_paths), the same for every worker
    console.rule(f"Light-WAM pipeline (preset {cfg.preset}, workdir {cfg.workdir})")
    times: dict[str, float] = {}
    start = time.perf_counter()
    with ray_session(cfg.cluster) as resources:
        _interrupt_on_sigterm()  # again: ray.init installs a fatal-signal handler that would abort without cleanup
        console.print(f"Ray: {resources.get('CPU', 0):.0f} CPU, {resources.get('GPU', 0):.0f} GPU")

        if cfg.pretrain.before_run:  # corpus -> fitted VAE -> pretrained DiT, each reused when it exists
            from pipeline.prior.chain import ensure_prior

            ensure_prior(cfg)
        # 1. the dataset: a local LeRobot dataset, or the embedded MetaWorld demo
        console.print(f"\\[1/4] dataset: {dataset_root(cfg)}")
        times["dataset"] = time.perf_counter() - start

        # 2. the offline cache: Ray Data -> WebDataset latent shards + manifest
        console.print("\\[2/4] offline cache")
        built = preprocess(cfg)
        print_summary(built)
        if not built.ok:
            raise SystemExit(1)
        cache = built.open()
        times["cache"] = time.perf_counter() - start - sum(times.values())

        # 3. training: Ray Train DDP, tracked in MLflow, final checkpoint registered
        console.print("\\[3/4] training")
        trained = train(cfg, cache)
        times["train"] = time.perf_counter() - start - sum(times.values())

        # 4. closed-loop evaluation of the registered version in simulation
        console.print("\\[4/4] closed-loop evaluation")
        cfg.eval.model = trained.model_uri
        results = earlier_evaluation(cfg, trained)
        if results is not None:
            console.print(f"evaluation of {trained.model_uri} with these settings exists: skipped")
        else:
            results = evaluate_model(cfg)
        times["evaluate"] = time.perf_counter() - start - sum(times.values())

    console.rule("summary")
    console.print(f"cache       {built.cache_dir} (fingerprint {cache.fingerprint})")
    console.print(f"MLflow run  {trained.run_id} ({trained.run_name}); model {trained.model_uri}")
    tasks = ", ".join(f"{t}: {s['success']:.0%}" for t, s in results["tasks"].items())
    console.print(f"success     {results['success_mean']:.1%} mean ({tasks})")
    console.print("time        " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items())
                  + f"; total {time.perf_counter() - start:.0f}s")
    console.print(f"view runs   {tracking.ui_command(cfg)}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:  # by now Ray is shut down and the MLflow run (if any) is marked KILLED
        console.print("[red]interrupted[/red]: the same command continues from the cache and the last checkpoint")
        raise SystemExit(130) from None
