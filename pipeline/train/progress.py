"""A driver-side progress bar for training, fed by the metrics rank 0 logs to MLflow.

Ray Train workers run in other processes (possibly other machines); the one
place every step's progress already lands is the MLflow run, so the driver
polls it in a background thread while `trainer.fit()` blocks.
"""

from __future__ import annotations

import threading

from mlflow import MlflowClient
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

from pipeline.console import console
from pipeline.logged_progress import LoggedProgress


class TrainingProgress:
    def __init__(self, run_id: str, steps: int, every_s: float = 2.0) -> None:
        self.run_id, self.steps, self.every_s = run_id, steps, every_s
        self._stop = threading.Event()
        self._progress = LoggedProgress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                                  TimeElapsedColumn(), console=console, transient=False)
        self._task = self._progress.add_task("train steps", total=steps, info="starting workers")

    def _poll(self) -> None:
        client = MlflowClient()
        while not self._stop.wait(self.every_s):
            try:
                m = client.get_run(self.run_id).data.metrics
            except Exception:  # a busy sqlite store: try again next tick
                continue
            if "step" in m:
                info = f"loss {m.get('loss', float('nan')):.4f}  {m.get('samples_per_s', 0):.1f} samples/s"
                self._progress.update(self._task, completed=int(m["step"]), info=info)

    def __enter__(self) -> TrainingProgress:
        self._progress.start()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._poll_once_final()
        self._progress.stop()

    def _poll_once_final(self) -> None:
        try:
            m = MlflowClient().get_run(self.run_id).data.metrics
            self._progress.update(self._task, completed=int(m.get("step", 0)))
        except Exception:
            pass
