"""Stored answers for ``Idempotency-Key`` retries.

Every command's first answer is kept as a ``StoredAnswer`` (the request's
fingerprint, a status and the JSON answered), per caller and key. A key
command's answer is ``{"key": …, "position": …}`` with status 201 for a
generated key, else 200 (``StoredOutcome`` reads it back; the shape earlier
versions wrote, so retries of commands made before an upgrade still replay);
a bulk revocation, an identity's configuration and a webhook endpoint's
registration or removal keep their own answers (``{"revoked": …}``,
``{"identity": …}``, ``{"webhook": …}``). One table for all, so a key reused
across endpoints is refused, never replayed as another endpoint's answer (the
fingerprints differ).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from service.errors import KeyledgerError

_CREATED, _CHANGED = 201, 200


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    """What a command answered the first time (never a secret), and to which request."""

    request_hash: str
    status: int
    response: dict[str, Any]

    def replayed(self, fingerprint: str, shape: str) -> dict[str, Any]:
        """The first answer, for a retry sent with ``fingerprint``; 422
        ``idempotency_key_reused`` if the key came with another request, or if the
        answer has no ``shape`` field (another endpoint's, whose fingerprint differs)."""
        if self.request_hash != fingerprint or shape not in self.response:
            raise KeyledgerError(
                "idempotency_key_reused", "this Idempotency-Key was used with a different request"
            )
        return self.response


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    """What a key command answered the first time (never a secret)."""

    request_hash: str
    created: bool
    key: dict[str, Any]
    position: int

    @staticmethod
    def of(answer: StoredAnswer) -> StoredOutcome:
        """A key command's answer read back; another endpoint's has no ``key`` (its
        fingerprint never matches a key command's, so it is refused, never replayed)."""
        response = answer.response
        return StoredOutcome(
            answer.request_hash,
            answer.status == _CREATED,
            response.get("key", {}),
            response.get("position", 0),
        )

    def answer(self) -> StoredAnswer:
        """This outcome as it is stored."""
        return StoredAnswer(
            self.request_hash,
            _CREATED if self.created else _CHANGED,
            {"key": self.key, "position": self.position},
        )


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
    answer = StoredAnswer(request_hash, status, json.loads(response_text))
    return (caller_key_id, idempotency_key), StoredOutcome.of(answer)


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
        [json.dumps(outcome.answer().response) for outcome in outcomes.values()],
    ]


class IdempotencyStore:
    """Per-caller memory of command answers, ``ttl_hours`` long."""

    def __init__(self, ttl_hours: int) -> None:
        self.ttl_hours = ttl_hours

    async def find(
        self, conn: asyncpg.Connection, caller_key_id: str, idempotency_key: str
    ) -> StoredOutcome | None:
        """A key command's outcome remembered under this key, if still kept."""
        answer = await self.find_answer(conn, caller_key_id, idempotency_key)
        return None if answer is None else StoredOutcome.of(answer)

    async def remember(
        self,
        conn: asyncpg.Connection,
        caller_key_id: str,
        idempotency_key: str,
        outcome: StoredOutcome,
    ) -> None:
        """Keep a key command's outcome for retries."""
        await self.remember_answer(conn, caller_key_id, idempotency_key, outcome.answer())

    async def find_answer(
        self, conn: asyncpg.Connection, caller_key_id: str, idempotency_key: str
    ) -> StoredAnswer | None:
        """The answer remembered under this key, if still kept."""
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
        return StoredAnswer(row["request_hash"], row["status"], json.loads(row["response"]))

    async def remember_answer(
        self,
        conn: asyncpg.Connection,
        caller_key_id: str,
        idempotency_key: str,
        answer: StoredAnswer,
    ) -> None:
        """Keep ``answer`` for retries with the same key."""
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
            answer.request_hash,
            answer.status,
            json.dumps(answer.response),
        )
