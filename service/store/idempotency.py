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


def lookup_sql(first: int = 1) -> str:
    """Rows ``stored_outcome`` reads, for arrays of (caller key id, Idempotency-Key) from
    ``$first`` and the TTL in hours after them, still kept."""
    callers, keys, hours = (f"${n}" for n in range(first, first + 3))
    return f"""SELECT ROW(caller_key_id, idempotency_key, request_hash, status, response::text)
               FROM idempotency_keys
               WHERE (caller_key_id, idempotency_key) IN
                     (SELECT * FROM unnest({callers}::text[], {keys}::text[]))
                 AND created_at > now() - make_interval(hours => {hours}::int)"""


def stored_outcome(row: Sequence[Any]) -> tuple[tuple[str, str], StoredOutcome]:
    """A row of ``lookup_sql``: (caller key id, Idempotency-Key) and the stored outcome."""
    caller_key_id, idempotency_key, request_hash, status, response_text = row
    response = json.loads(response_text)
    outcome = StoredOutcome(request_hash, status == _CREATED, response["key"], response["position"])
    return (caller_key_id, idempotency_key), outcome


def remember_sql(first: int = 1) -> str:
    """Keep outcomes from five arrays, ``$first``… (see ``remember_columns``)."""
    p = [f"${n}" for n in range(first, first + 5)]
    # An expired row with the same key is replaced: after the TTL the key is free again.
    return f"""INSERT INTO idempotency_keys
                   (caller_key_id, idempotency_key, request_hash, status, response)
               SELECT * FROM unnest({p[0]}::text[], {p[1]}::text[], {p[2]}::text[],
                   {p[3]}::int[], {p[4]}::jsonb[])
               ON CONFLICT (caller_key_id, idempotency_key) DO UPDATE SET
                   request_hash = EXCLUDED.request_hash, status = EXCLUDED.status,
                   response = EXCLUDED.response, created_at = now()"""


def remember_columns(outcomes: Mapping[tuple[str, str], StoredOutcome]) -> list[list[Any]]:
    """The arrays ``remember_sql`` takes, one element per (caller key id, Idempotency-Key)."""
    return [
        [caller for caller, _ in outcomes],
        [key for _, key in outcomes],
        [outcome.request_hash for outcome in outcomes.values()],
        [_CREATED if outcome.created else _CHANGED for outcome in outcomes.values()],
        [
            json.dumps({"key": outcome.key, "position": outcome.position})
            for outcome in outcomes.values()
        ],
    ]


class IdempotencyStore:
    """Per-caller memory of command outcomes, ``ttl_hours`` long."""

    def __init__(self, ttl_hours: int) -> None:
        self.ttl_hours = ttl_hours

    async def find(
        self, conn: asyncpg.Connection, caller_key_id: str, idempotency_key: str
    ) -> StoredOutcome | None:
        """The outcome kept for this caller's ``Idempotency-Key``, unless older than the TTL."""
        rows = await conn.fetchval(
            f"SELECT ARRAY({lookup_sql()})", [caller_key_id], [idempotency_key], self.ttl_hours
        )
        return stored_outcome(rows[0])[1] if rows else None
