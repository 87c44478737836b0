"""Delivery attempts of webhook endpoints (``webhook_deliveries``), and the backoff schedule."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

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
