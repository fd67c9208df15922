"""The only place that reads wall time. Everything else takes ``now`` as an argument."""

from __future__ import annotations

from datetime import datetime, timezone


def utcnow() -> datetime:
    """The current instant as a UTC-aware datetime."""
    return datetime.now(timezone.utc)
