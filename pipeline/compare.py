"""`python -m pipeline.compare [overrides] [fingerprint=<prefix>]`: ablations side by side.

Runs trained on the same shards carry the same cache-fingerprint tag; this
prints, per fingerprint, one row per run: the config keys that differ between
them, final losses, closed-loop success, with the best run marked (highest
success, then lowest action loss).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import mlflow
from rich.table import Table

from pipeline import tracking
from pipeline.cli import parse_or_exit
from pipeline.console import console
from pipeline.train import FINGERPRINT_TAG, RUN_NAME_TAG

LOSSES = ("loss", "video_loss", "action_loss")
SUCCESS = "eval/success_mean"


@dataclass
class RunRow:
    run_id: str
    name: str
    status: str
    params: dict[str, str]
    metrics: dict[str, float]

    def rank_key(self) -> tuple[float, float]:
        return (self.metrics.get(SUCCESS, float("-inf")), -self.metrics.get("action_loss", float("inf")))


def runs_by_fingerprint(experiment_id: str) -> dict[str, list[RunRow]]:
    groups: dict[str, list[RunRow]] = {}
    for run in mlflow.search_runs([experiment_id], output_format="list", order_by=["attributes.start_time ASC"]):
        fp = run.data.tags.get(FINGERPRINT_TAG)
        if not fp:
            continue
        row = RunRow(run.info.run_id, run.data.tags.get(RUN_NAME_TAG, run.info.run_name), run.info.status,
                     dict(run.data.params), dict(run.data.metrics))
        groups.setdefault(fp, []).append(row)
    return groups


def differing_keys(rows: list[RunRow]) -> list[str]:
    keys = sorted({k for r in rows for k in r.params})
    ignore = {"train.run_name"}
    return [k for k in keys if k not in ignore and len({r.params.get(k) for r in rows}) > 1]


def table_for(fingerprint: str, rows: list[RunRow]) -> Table:
    keys = differing_keys(rows)
    best = max(rows, key=RunRow.rank_key)
    table = Table(title=f"cache {fingerprint[:12]}: {len(rows)} run(s)")
    table.add_column("")
    table.add_column("run")
    table.add_column("status")
    for k in keys:
        table.add_column(k)
    for m in (*LOSSES, "success"):
        table.add_column(m, justify="right")
    for r in rows:
        fmt = [f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in LOSSES]
        success = f"{r.metrics[SUCCESS]:.1%}" if SUCCESS in r.metrics else "-"
        table.add_row("*" if r is best and len(rows) > 1 else "", r.name, r.status,
                      *[r.params.get(k, "-") for k in keys], *fmt, success)
    return table


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    wanted = next((a.split("=", 1)[1] for a in args if a.startswith("fingerprint=")), "")
    cfg = parse_or_exit([a for a in args if not a.startswith("fingerprint=")])
    experiment_id = tracking.setup(cfg)
    groups = {fp: rows for fp, rows in runs_by_fingerprint(experiment_id).items() if fp.startswith(wanted)}
    if not groups:
        console.print(f"no training runs{' for fingerprint ' + wanted if wanted else ''} in "
                      f"{tracking.tracking_uri(cfg)} (experiment {cfg.tracking.experiment})")
        raise SystemExit(1)
    for fp, rows in groups.items():
        console.print(table_for(fp, rows))
    console.print("* = best: highest closed-loop success, then lowest action loss")


if __name__ == "__main__":
    main()
