"""One shared rich console, so progress bars and log lines interleave cleanly.

Outside a terminal (a `ray job` log, a redirect) rich would wrap at 80 columns,
splitting paths, model URIs and commands across lines and cutting table
headers: there lines are never wrapped and tables get $COLUMNS (default 200).
"""

import os
import sys

from rich.console import Console

_terminal = sys.stdout.isatty()
console = Console(highlight=False, soft_wrap=not _terminal,
                  width=None if _terminal else int(os.environ.get("COLUMNS", "200")))
