"""One shared rich console, so progress bars and log lines interleave cleanly."""

from rich.console import Console

console = Console(highlight=False)
