"""A rich progress bar that also works where output is not a terminal.

rich draws nothing until the end when stdout is a file or a pipe (a `ray job`
log, a redirect), so a long step looks hung. There, `LoggedProgress` prints one
plain line per unfinished task every `every_s` seconds: counts, rate, elapsed.
In a terminal it is rich's `Progress`, unchanged.
"""

from __future__ import annotations

import threading

from rich.progress import Progress, Task


def plain_line(task: Task) -> str:
    elapsed = task.elapsed or 0.0
    rate = task.completed / elapsed if elapsed > 0 else 0.0
    total = f"/{task.total:.0f}" if task.total is not None else ""
    extra = "  ".join(v if isinstance(v, str) else f"{k}={v}" for k, v in task.fields.items() if str(v))
    return (f"{task.description}: {task.completed:.0f}{total} ({rate:.2f}/s), {elapsed:.0f}s elapsed"
            + (f"  {extra}" if extra else ""))


class LoggedProgress(Progress):
    def __init__(self, *columns, every_s: float = 10.0, **kwargs) -> None:
        super().__init__(*columns, **kwargs)
        self._every_s = every_s
        self._quit = threading.Event()
        self._printer: threading.Thread | None = None

    def start(self) -> None:
        super().start()
        if not self.console.is_terminal and not self.disable and self._printer is None:
            self._printer = threading.Thread(target=self._print_lines, daemon=True)
            self._printer.start()

    def stop(self) -> None:
        self._quit.set()
        if self._printer is not None:
            self._printer.join(timeout=5)
        super().stop()

    def _print_lines(self) -> None:
        while not self._quit.wait(self._every_s):
            for task in self.tasks:
                if task.visible and not task.finished:
                    self.console.print(plain_line(task), markup=False, highlight=False, soft_wrap=True)
