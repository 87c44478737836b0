"""Stored outcomes for ``Idempotency-Key`` retries.

The row keeps the shape earlier versions wrote (``status`` 201 for a
generated key, else 200; ``response`` ``{"key": …, "position": …}``), so
retries of commands made before an upgrade still replay.
"""

from __future__ import annotations

import json
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
        if row is None:
            return None
        response = json.loads(row["response"])
        return StoredOutcome(
            row["request_hash"], row["status"] == _CREATED, response["key"], response["position"]
        )

    async def remember(
        self,
        conn: asyncpg.Connection,
        caller_key_id: str,
        idempotency_key: str,
        outcome: StoredOutcome,
    ) -> None:
        # An expired row with the same key is replaced: after the TTL the key is free again.
        await conn.execute(
            """INSERT INTO idempotency_keys
                   (caller_key_id, idempotency_key, request_hash, status, response)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (caller_key_id, idempotency_key) DO UPDATE SET
                   request_hash = EXCLUDED.request_hash, status = EXCLUDED.status,
                   response = EXCLUDED.response, created_at = now()""",
            caller_key_id,
            idempotency_key,
            outcome.request_hash,
            _CREATED if outcome.created else _CHANGED,
            json.dumps({"key": outcome.key, "position": outcome.position}),
        )
