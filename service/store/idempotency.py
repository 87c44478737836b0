"""Stored responses for ``Idempotency-Key`` retries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import asyncpg


@dataclass(frozen=True, slots=True)
class StoredResponse:
    request_hash: str
    status: int
    body: dict[str, Any]


class IdempotencyStore:
    """Per-caller memory of command responses, ``ttl_hours`` long."""

    def __init__(self, ttl_hours: int) -> None:
        self.ttl_hours = ttl_hours

    async def find(
        self, conn: asyncpg.Connection, caller_key_id: str, idempotency_key: str
    ) -> StoredResponse | None:
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
        return StoredResponse(row["request_hash"], row["status"], json.loads(row["response"]))

    async def remember(
        self,
        conn: asyncpg.Connection,
        caller_key_id: str,
        idempotency_key: str,
        response: StoredResponse,
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
            response.request_hash,
            response.status,
            json.dumps(response.body),
        )
