"""Delivery attempts of webhook endpoints (``webhook_deliveries``), and the backoff schedule."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import asyncpg

from events.codec import format_timestamp
from events.models import Envelope

Outcome = Literal["delivered", "failed", "dead_lettered"]
MAX_ERROR_LENGTH = 200


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff: ``base``·2^(n-1) seconds after the n-th failure, at most ``cap``;
    given up ``give_up_after`` seconds after the first attempt."""

    base_seconds: float
    cap_seconds: float
    give_up_after_seconds: float

    def delay(self, failures: int) -> float:
        """Seconds to wait after the ``failures``-th failed attempt."""
        return float(min(self.cap_seconds, self.base_seconds * 2 ** min(failures - 1, 60)))

    def exhausted(self, first_attempt: datetime, now: datetime) -> bool:
        """Whether retrying is over for an event first tried at ``first_attempt``."""
        return (now - first_attempt).total_seconds() >= self.give_up_after_seconds


@dataclass(frozen=True, slots=True)
class History:
    """What was done so far to deliver one event to one endpoint."""

    attempts: int
    first_attempt: datetime | None
    settled: bool  # delivered or dead-lettered: nothing more to do


@dataclass(frozen=True, slots=True)
class Blocker:
    """An earlier event of the same key that an endpoint has not been delivered yet."""

    event_id: UUID
    position: int
    attempts: int


# The endpoint's earliest event of the key before ``position`` that is neither delivered
# nor dead-lettered. Read from the log itself, not from what JetStream has handed out:
# the order holds whatever order redeliveries come in (after a leader change, say).
_EARLIER_UNSETTLED = """
SELECT e.event_id, e.position,
       (SELECT count(*) FROM webhook_deliveries AS d
        WHERE d.webhook_id = $1 AND d.event_id = e.event_id) AS attempts
FROM events AS e
WHERE e.key_id = $2 AND e.org_id = $3 AND e.position < $4
  AND e.position > $5 AND e.occurred_at >= $6 AND e.event_type = ANY($7::text[])
  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries AS d
                  WHERE d.webhook_id = $1 AND d.event_id = e.event_id AND d.outcome <> 'failed')
  -- An event the relay could not publish never comes: it holds nothing back.
  AND NOT EXISTS (SELECT 1 FROM quarantined_keys AS q
                  WHERE q.key_id = e.key_id AND q.consumer = $8 AND q.position = e.position)
ORDER BY e.position
LIMIT 1
"""


class DeliveryAttempts:
    """The ``webhook_deliveries`` table."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def history(self, webhook_id: str, event_id: Any) -> History:
        """The attempts made so far for ``event_id`` at ``webhook_id``."""
        row = await self.pool.fetchrow(
            "SELECT count(*) AS attempts, min(attempted_at) AS first,"
            " bool_or(outcome <> 'failed') AS settled"
            " FROM webhook_deliveries WHERE webhook_id = $1 AND event_id = $2",
            webhook_id,
            event_id,
        )
        return History(row["attempts"], row["first"], bool(row["settled"]))

    async def earlier_unsettled(
        self,
        webhook_id: str,
        envelope: Envelope,
        *,
        after_position: int,
        since: datetime,
        event_types: Sequence[str],
        relay: str,
    ) -> Blocker | None:
        """The first event of ``envelope``'s key (of ``event_types``, after
        ``after_position`` and ``since``) before it, not yet settled at ``webhook_id``,
        leaving out the one that ``relay`` (its name in ``quarantined_keys``) set aside."""
        row = await self.pool.fetchrow(
            _EARLIER_UNSETTLED,
            webhook_id,
            envelope.key_id,
            envelope.org_id,
            envelope.position,
            after_position,
            since,
            list(event_types),
            relay,
        )
        return Blocker(row["event_id"], row["position"], row["attempts"]) if row else None

    async def record(
        self,
        webhook_id: str,
        envelope: Envelope,
        *,
        attempt: int,
        at: datetime,
        outcome: Outcome,
        status_code: int | None = None,
        error: str | None = None,
    ) -> None:
        """Record one attempt (the error text is ours, short, never a response body)."""
        await self.pool.execute(
            "INSERT INTO webhook_deliveries (webhook_id, event_id, event_type, key_id, position,"
            " attempt, attempted_at, outcome, status_code, error)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            webhook_id,
            envelope.event_id,
            envelope.event_type,
            envelope.key_id,
            envelope.position,
            attempt,
            at,
            outcome,
            status_code,
            error[:MAX_ERROR_LENGTH] if error else None,
        )

    async def listing(
        self, webhook_id: str, *, limit: int, before: int | None = None
    ) -> list[dict[str, Any]]:
        """Attempts at ``webhook_id``, newest first, as the API shows them."""
        rows = await self.pool.fetch(
            "SELECT attempt_id, event_id, event_type, key_id, position, attempt, attempted_at,"
            " outcome, status_code, error FROM webhook_deliveries"
            " WHERE webhook_id = $1 AND ($2::bigint IS NULL OR attempt_id < $2)"
            " ORDER BY attempt_id DESC LIMIT $3",
            webhook_id,
            before,
            limit,
        )
        return [
            {
                "id": row["attempt_id"],
                "event_id": str(row["event_id"]),
                "event_type": row["event_type"],
                "key_id": row["key_id"],
                "position": row["position"],
                "attempt": row["attempt"],
                "attempted_at": format_timestamp(row["attempted_at"]),
                "outcome": row["outcome"],
                "status_code": row["status_code"],
                "error": row["error"],
            }
            for row in rows
        ]
