"""Per-key rate limits (a key's ``rate_limit``), exact within one replica.

A fixed window per key: the window is ``floor(now / length)``; the first
``limit`` requests in it pass, the rest are refused with the seconds until the
next window. Counters live only for keys that were used in their current
window; stale ones are dropped as the table grows.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from events.models import RateLimit
from events.vocabulary import RATE_WINDOW_SECONDS

_PRUNE_EVERY = 10_000


class RateLimiter:
    """Counts requests per key in fixed windows."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # key id -> [window length, window number, requests counted]
        self._counters: dict[str, list[int]] = {}
        self._since_prune = 0

    def take(self, key_id: str, rate_limit: RateLimit) -> int | None:
        """Count one request: None when allowed, else seconds until it would be."""
        now = self._clock()
        length = RATE_WINDOW_SECONDS[rate_limit.window]
        window = int(now // length)
        counter = self._counters.get(key_id)
        if counter is None or counter[0] != length or counter[1] != window:
            self._counters[key_id] = [length, window, 1]
            self._maybe_prune(now)
            return None if rate_limit.limit >= 1 else self._retry_after(now, length, window)
        if counter[2] >= rate_limit.limit:
            return self._retry_after(now, length, window)
        counter[2] += 1
        return None

    @staticmethod
    def _retry_after(now: float, length: int, window: int) -> int:
        return max(1, math.ceil((window + 1) * length - now))

    def _maybe_prune(self, now: float) -> None:
        self._since_prune += 1
        if self._since_prune < _PRUNE_EVERY:
            return
        self._since_prune = 0
        self._counters = {
            key_id: counter
            for key_id, counter in self._counters.items()
            if counter[1] == int(now // counter[0])
        }

    def __len__(self) -> int:
        return len(self._counters)
