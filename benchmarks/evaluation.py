"""Closed-loop evaluation throughput: episodes per minute, one in-process simulator vs N Ray actors.

`python -m benchmarks.evaluation [--episodes 2] [--workers 2]` on the demo
MetaWorld tasks (64x64 corner + wrist cameras). Two policies bracket the cost
of the driver round trip: the scripted expert (a new request after every step)
and a constant policy with 8-action chunks (the demo preset's replanning).
Env-actor startup (Ray, imports, simulator build) is included: it is what a user waits for.
"""

from __future__ import annotations

import argparse
import os
import time

from rich.table import Table

from benchmarks import machine
from pipeline.console import console
from sim.config import DemoConfig
from sim.evaluation import plan_episodes, run_episodes
from sim.policies import ConstantPolicy, ExpertPolicy
from sim.rollout import EnvSpec, LoopSettings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=2, help="episodes per task")
    parser.add_argument("--workers", type=int, default=2, help="parallel Ray env actors")
    args = parser.parse_args()
    demo = DemoConfig()
    cases = {
        "expert, 1-step chunks": (ExpertPolicy(), LoopSettings(1, with_expert=True), demo.max_steps),
        "constant, 8-step chunks": (ConstantPolicy([0, 0, 0, 0], horizon=8), LoopSettings(8), 100),
    }
    import ray

    os.environ["RAY_AUTH_MODE"] = "disabled"  # loopback-only, benchmark-lifetime cluster
    ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False, configure_logging=False)
    table = Table(title=f"closed-loop evaluation throughput ({machine.describe()})")
    for col in ("policy", "episodes", "env steps", "serial ep/min", f"{args.workers} actors ep/min", "ratio"):
        table.add_column(col, justify="left" if col == "policy" else "right")
    try:
        for name, (policy, settings, max_steps) in cases.items():
            envs = [EnvSpec("metaworld", "metaworld", t, tuple(demo.cameras), demo.height, demo.width, max_steps)
                    for t in demo.tasks]
            plan = plan_episodes(envs, args.episodes, 1000, 0)
            rates, steps = [], 0
            for workers in (0, args.workers):
                start = time.perf_counter()
                results = run_episodes(plan, policy, settings, workers)
                rates.append(60 * len(results) / (time.perf_counter() - start))
                steps = sum(r.steps for r in results)
            table.add_row(name, str(len(plan)), str(steps), f"{rates[0]:.1f}", f"{rates[1]:.1f}", f"{rates[1] / rates[0]:.2f}x")
    finally:
        ray.shutdown()
    console.print(table)
    console.print(f"config: demo tasks {demo.tasks}, cameras {demo.cameras} at {demo.width}x{demo.height}, "
                  f"{args.episodes} episodes per task; serial = one simulator in the driver process")


if __name__ == "__main__":
    main()
