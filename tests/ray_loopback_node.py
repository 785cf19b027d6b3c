"""`ray start` for an extra node on this machine's loopback, for multi-node tests.

Ray's CLI replaces 127.0.0.1 by the machine's outward address in every address
it is given, unless its "no multi-node clusters" switch is set; and with that
switch set it refuses to start a non-head node. A test cluster that must stay on
127.0.0.1 therefore starts its second node through the same CLI with only that
replacement turned off. Usage: `python tests/ray_loopback_node.py start --address ...`.
"""

from __future__ import annotations

import sys

from ray._private import services
from ray.scripts.scripts import main

if __name__ == "__main__":
    services.resolve_ip_for_localhost = lambda host: host  # keep 127.0.0.1 as given
    sys.exit(main())
