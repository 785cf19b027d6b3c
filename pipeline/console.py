"""One shared rich console, so progress bars and log lines interleave cleanly.

It is rich's global console, so the lower layers (e.g. `sim.demos`) print
through the same one via `rich.get_console()` without importing the pipeline.
"""

import rich

rich.reconfigure(highlight=False)
console = rich.get_console()
