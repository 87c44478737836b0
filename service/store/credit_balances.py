"""Credit balances in PostgreSQL (migration 0061): set by events, taken in blocks.

``save`` runs in the command's transaction; ``reserve`` and ``give_back`` are
the atomic updates replicas spend through (``service.verification.credits``).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any, NamedTuple

import asyncpg

from service.domain.credit_periods import next_period_start
from service.domain.state import KeyState


class Reservation(NamedTuple):
    """Credits taken for one replica, and what the balance says after."""

    granted: int
    epoch: int
    remaining: int


class CreditBalances:
    """The ``key_credits`` table."""

    async def save(self, conn: asyncpg.Connection, state: KeyState) -> None:
        """Record the balance ``state``'s last credits event set (nothing if none did)."""
        await conn.execute(upsert_sql(), *upsert_columns([state]))

    async def reserve(
        self, conn: asyncpg.Connection | asyncpg.Pool, key_id: str, need: int, block: int
    ) -> Reservation | None:
        """Take ``max(need, block)`` credits, or all that is left if that is at least ``need``.

        None when fewer than ``need`` are left (then nothing is taken). One
        statement: concurrent replicas never take the same credit twice.
        """
        row = await conn.fetchrow(
            """
            WITH taken AS (
                SELECT key_id, LEAST(remaining, GREATEST($2::bigint, $3::bigint)) AS n
                FROM key_credits WHERE key_id = $1 AND remaining >= $2 FOR UPDATE
            )
            UPDATE key_credits AS k SET remaining = k.remaining - taken.n
            FROM taken WHERE k.key_id = taken.key_id
            RETURNING taken.n AS granted, k.epoch, k.remaining
            """,
            key_id,
            need,
            block,
        )
        return None if row is None else Reservation(row["granted"], row["epoch"], row["remaining"])

    async def give_back(
        self, conn: asyncpg.Connection | asyncpg.Pool, key_id: str, epoch: int, unspent: int
    ) -> None:
        """Return credits a replica took but did not spend (if the balance was not set since)."""
        await conn.execute(
            "UPDATE key_credits SET remaining = remaining + $3 WHERE key_id = $1 AND epoch = $2",
            key_id,
            epoch,
            unspent,
        )

    async def due_for_refill(
        self, conn: asyncpg.Connection, now: datetime
    ) -> list[tuple[str, str]]:
        """(key_id, org_id) of keys whose next refill period has begun."""
        rows = await conn.fetch(
            """SELECT c.key_id, c.org_id FROM key_credits AS c
               JOIN key_registry AS r ON r.key_id = c.key_id
               WHERE c.next_refill_at <= $1 AND r.status IN ('active', 'disabled')
                 AND (r.expires_at IS NULL OR r.expires_at > $1)
               ORDER BY c.next_refill_at LIMIT 500""",
            now,
        )
        return [(r["key_id"], r["org_id"]) for r in rows]


def upsert_sql(first: int = 1) -> str:
    """Set balances from five arrays, ``$first``… (``upsert_columns``): a newer setting
    (a higher ``epoch``, the version of the event that set it) replaces the balance, an
    older one never does."""
    key_id, org_id, remaining, epoch, refill_at = (f"${n}" for n in range(first, first + 5))
    return f"""
    INSERT INTO key_credits (key_id, org_id, remaining, epoch, next_refill_at)
    SELECT * FROM unnest({key_id}::text[], {org_id}::text[], {remaining}::bigint[],
        {epoch}::int[], {refill_at}::timestamptz[])
    ON CONFLICT (key_id) DO UPDATE SET
        remaining = EXCLUDED.remaining,
        epoch = EXCLUDED.epoch,
        next_refill_at = EXCLUDED.next_refill_at
    WHERE key_credits.epoch < EXCLUDED.epoch"""


def upsert_columns(states: Iterable[KeyState]) -> list[list[Any]]:
    """The arrays ``upsert_sql`` takes: one element per state whose credits an event set."""
    rows = []
    for state in states:
        if state.credits_version == 0:
            continue  # no event ever set credits on this key
        credits = state.credits
        refill = credits.refill if credits is not None else None
        rows.append(
            (
                state.key_id,
                state.org_id,
                credits.remaining if credits is not None else 0,  # cleared: nothing to take
                state.credits_version,
                next_period_start(refill, state.updated_at) if refill is not None else None,
            )
        )
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 5
