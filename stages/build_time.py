"""When a cache was built, so a no-op rerun can say it reused that build instead of printing its timings as new."""

from __future__ import annotations

from datetime import UTC, datetime


def built_at() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def reused_message(manifest: dict) -> str:
    when = manifest.get("built_at", "at an unrecorded time")
    return f"cache reused: built {when}, nothing to do (timings shown are that build's)"
