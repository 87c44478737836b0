"""When the clients send a call again, and how long they wait first.

Both clients (``KeyledgerClient``, ``SyncKeyledgerClient``) follow one ``RetryPolicy``;
nothing here does I/O or sleeps.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from keyledger_client.calls import Reply


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to wait before sending a call again.

    A call is sent again only when doing so cannot do anything twice: reads and
    verifications change nothing, and every command carries an
    ``Idempotency-Key`` that the server answers a repeat of with the first result.
    """

    attempts: int = 4
    base_delay: float = 0.1
    max_delay: float = 5.0
    # 429: over the caller's rate limit; 502-504: the server or a proxy is overloaded.
    statuses: frozenset[int] = frozenset({429, 502, 503, 504})

    def after(self, attempt: int, reply: Reply | None) -> float | None:
        """Seconds to wait before sending again after attempt ``attempt`` (0-based) got
        ``reply`` (None: a connection error); None when the answer stands as it is."""
        if attempt + 1 >= self.attempts:
            return None
        if reply is None:
            return self.delay(attempt)
        if reply.status in self.statuses:
            return self.delay(attempt, retry_after_of(reply.headers))
        return None

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before attempt ``attempt + 1``: ``Retry-After`` when given,
        else exponential backoff with full jitter (replicas do not retry in step)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_delay)
        return random.uniform(0, min(self.max_delay, self.base_delay * 2**attempt))


def retry_after_of(headers: Mapping[str, str]) -> float | None:
    """The ``Retry-After`` header in seconds (the delta form; a date is ignored)."""
    value = headers.get("retry-after") or headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
