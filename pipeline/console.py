"""One shared rich console, so progress bars and log lines interleave cleanly.

It is rich's global console, so the lower layers (e.g. `sim.demos`) print
through the same one via `rich.get_console()` without importing the pipeline.
Outside a terminal (a `ray job` log, a redirect) rich would wrap at 80 columns,
splitting paths, model URIs and commands across lines and cutting table
headers: there lines are never wrapped and tables get $COLUMNS (default 200).
"""

import os
import sys

import rich

_terminal = sys.stdout.isatty()
rich.reconfigure(highlight=False, soft_wrap=not _terminal,
                 width=None if _terminal else int(os.environ.get("COLUMNS", "200")))
console = rich.get_console()
