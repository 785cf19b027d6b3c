"""Which Ray node ran a stage: recorded per shard so a multi-node run shows where its work went.

Provenance only: it is kept in the shard sidecars and the manifest's `nodes`,
never in the cache identity, so the same inputs give the same fingerprint and
shard bytes whichever nodes did the work.
"""

from __future__ import annotations


def node_id() -> str:
    """The Ray node id of this process, or "" outside Ray (a stage called directly, as in unit tests)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
