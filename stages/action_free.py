"""Caches of action-free video (a pretraining corpus, a user's unlabelled recordings).

The cache accepts a LeRobot dataset without an action feature: its samples carry
empty action vectors, which pretraining (`pipeline.prior.pretrain`) never reads. Action
training on such a cache would learn from nothing, so it is refused by name.
"""

from __future__ import annotations


class ActionFreeCacheError(ValueError):
    """Action training was asked of a cache without actions."""


def has_actions(manifest: dict) -> bool:
    stats = (manifest.get("stats") or {}).get("actions")
    return bool(stats and stats.get("min"))


def require_actions(cache) -> None:
    """Raise, naming the cache and its dataset, when `cache` holds no actions."""
    if has_actions(cache.manifest):
        return
    dataset = cache.manifest.get("config", {}).get("data.path") or "the embedded demo"
    raise ActionFreeCacheError(
        f"cache {cache.cache_dir} (dataset {dataset}, fingerprint {cache.fingerprint[:12]}) has no actions: "
        f"its dataset has no '{cache.manifest['identity'].get('data.action_key', 'action')}' feature. "
        "It can pretrain a video prior (python -m pipeline.prior.pretrain), not train a policy; "
        "point data.path at a dataset with actions")
