"""`python -m pipeline.run`: the whole flow, end to end, on the resolved config.

demo dataset -> offline cache -> training -> closed-loop evaluation.
Steps that are not built yet say so plainly; none pretends to run.
"""

from __future__ import annotations

from pipeline.cli import parse_or_exit
from pipeline.console import console


def main(argv: list[str] | None = None) -> None:
    cfg = parse_or_exit(argv)
    console.rule(f"Light-WAM pipeline (preset {cfg.preset}, workdir {cfg.workdir})")

    # 1. the dataset: a local LeRobot dataset, or the embedded MetaWorld demo
    if cfg.data.path:
        dataset = cfg.data.path
        console.print(f"[1/4] dataset: {dataset}")
    else:
        from sim.demos import ensure_demo_dataset

        dataset = str(ensure_demo_dataset(cfg))
        console.print(f"[1/4] demo dataset ready: {dataset}")

    # 2. the offline cache: Ray Data -> WebDataset latent shards + manifest (a no-op when up to date)
    from pipeline.preprocess import preprocess, print_summary

    console.print("[2/4] offline cache")
    cache = preprocess(cfg)
    print_summary(cache)
    if not cache.ok:
        raise SystemExit(1)

    # 3-4. not built yet
    for step, name in [(3, "training (pipeline.train)"), (4, "closed-loop evaluation (pipeline.evaluate)")]:
        console.print(f"[{step}/4] {name}: not implemented yet, skipped")


if __name__ == "__main__":
    main()
