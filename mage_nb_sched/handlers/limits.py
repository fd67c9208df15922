"""Per-credential rate limits for the routes a token opens (the trigger URL, event ingestion).

A token bucket per key: ``rate`` calls a second on average, bursts of ``burst``. Kept in memory
(per server process, reset on restart) — the limit protects this server's scheduler from a
runaway client, it is not an accounting. Our own ~30 lines rather than a library (``limits``,
``pyrate-limiter``): no storage backend is wanted, and the clock is passed in so the arithmetic
is tested without waiting.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Any

from mage_nb_sched.core.errors import RateLimitError

#: Buckets kept; the least recently used is dropped beyond this (a flood of made-up tokens
#: must not grow memory without bound).
MAX_KEYS = 10_000


class RateLimiter:
    """``check(key)`` accepts a call or raises :class:`RateLimitError` with ``retry_after``."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1.0, 2 * self.rate))
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def check(self, key: str, now: float | None = None) -> None:
        """Take one call for ``key`` (a hash of the credential, never the credential)."""
        if self.rate <= 0:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.pop(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            # (a hair of slack: 0.1 s at 10/s must refill one whole call despite rounding)
            if tokens < 1.0 - 1e-9:
                self._buckets[key] = (tokens, now)
                raise RateLimitError(
                    f"Too many calls with this token (at most {self.rate:g} per second, bursts "
                    f"of {self.burst:g}). Retry after the Retry-After header's seconds, or raise "
                    "c.MageNbSchedApp.trigger_rate_limit.",
                    retry_after=max(0.0, 1.0 - tokens) / self.rate,
                )
            self._buckets[key] = (tokens - 1.0, now)
            while len(self._buckets) > MAX_KEYS:
                self._buckets.popitem(last=False)


def limiter_for(settings: dict[str, Any]) -> RateLimiter:
    """The server's one limiter (made on first use from ``trigger_rate_limit``)."""
    limiter = settings.get("mage_nb_sched_rate_limiter")
    if limiter is None:
        limiter = RateLimiter(float(settings.get("mage_nb_sched_trigger_rate_limit", 50.0)))
        settings["mage_nb_sched_rate_limiter"] = limiter
    return limiter
