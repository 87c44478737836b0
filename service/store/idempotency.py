"""Stored outcomes for ``Idempotency-Key`` retries.

The row keeps the shape earlier versions wrote (``status`` 201 for a
generated key, else 200; ``response`` ``{"key": …, "position": …}``), so
retries of commands made before an upgrade still replay.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

_CREATED, _CHANGED = 201, 200


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    """What a command answered the first time (never a secret)."""

    request_hash: str
    created: bool
    key: dict[str, Any]
    position: int


class IdempotencyStore:
    """Per-caller memory of command outcomes, ``ttl_hours`` long."""

    def __init__(self, ttl_hours: int) -> None:
        self.ttl_hours = ttl_hours

    async def find(
        self, conn: asyncpg.Connection, caller_key_id: str, idempotency_key: str
    ) -> StoredOutcome | None:
        row = await conn.fetchrow(
            """SELECT request_hash, status, response FROM idempotency_keys
               WHERE caller_key_id = $1 AND idempotency_key = $2
                 AND created_at > now() - make_interval(hours => $3)""",
            caller_key_id,
            idempotency_key,
            self.ttl_hours,
        )
        return None if row is None else _outcome(row)

    async def find_all(
        self, conn: asyncpg.Connection, wanted: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], StoredOutcome]:
        """``find`` for each (caller key id, Idempotency-Key) of ``wanted``, in one query."""
        if not wanted:
            return {}
        rows = await conn.fetch(
            """SELECT caller_key_id, idempotency_key, request_hash, status, response
               FROM idempotency_keys
               WHERE (caller_key_id, idempotency_key) IN
                     (SELECT * FROM unnest($1::text[], $2::text[]))
                 AND created_at > now() - make_interval(hours => $3)""",
            [caller for caller, _ in wanted],
            [key for _, key in wanted],
            self.ttl_hours,
        )
        return {(row["caller_key_id"], row["idempotency_key"]): _outcome(row) for row in rows}

    async def remember(
        self,
        conn: asyncpg.Connection,
        caller_key_id: str,
        idempotency_key: str,
        outcome: StoredOutcome,
    ) -> None:
        """Keep ``outcome`` for retries with the same key."""
        await self.remember_all(conn, {(caller_key_id, idempotency_key): outcome})

    async def remember_all(
        self, conn: asyncpg.Connection, outcomes: Mapping[tuple[str, str], StoredOutcome]
    ) -> None:
        """``remember`` each outcome by its (caller key id, Idempotency-Key), in one statement."""
        if not outcomes:
            return
        # An expired row with the same key is replaced: after the TTL the key is free again.
        await conn.execute(
            """INSERT INTO idempotency_keys
                   (caller_key_id, idempotency_key, request_hash, status, response)
               SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int[], $5::jsonb[])
               ON CONFLICT (caller_key_id, idempotency_key) DO UPDATE SET
                   request_hash = EXCLUDED.request_hash, status = EXCLUDED.status,
                   response = EXCLUDED.response, created_at = now()""",
            [caller for caller, _ in outcomes],
            [key for _, key in outcomes],
            [outcome.request_hash for outcome in outcomes.values()],
            [_CREATED if outcome.created else _CHANGED for outcome in outcomes.values()],
            [
                json.dumps({"key": outcome.key, "position": outcome.position})
                for outcome in outcomes.values()
            ],
        )


def _outcome(row: asyncpg.Record) -> StoredOutcome:
    response = json.loads(row["response"])
    return StoredOutcome(
        row["request_hash"], row["status"] == _CREATED, response["key"], response["position"]
    )
