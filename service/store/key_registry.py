"""The write side's registry of keys (see migration 0002).

Updated in the same transaction as every append, under the append lock, so
counts read here are exact even when many commands race.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from events.vocabulary import Environment, Status
from service.domain.orgs import SYSTEM_ORG
from service.domain.state import KeyState


@dataclass(frozen=True, slots=True)
class CallerStanding:
    """What decides whether a service key may still act: its status and secrets."""

    status: Status
    expires_at: datetime | None
    secret_hash: str | None
    previous_secret_hash: str | None
    previous_valid_until: datetime | None

    @staticmethod
    def of(state: KeyState) -> CallerStanding:
        """The standing of a key after a command of the same batch changed it."""
        return CallerStanding(
            state.status,
            state.expires_at,
            state.secret_hash,
            state.previous_secret_hash,
            state.previous_valid_until,
        )

    def admits(self, secret_hash: str | None, now: datetime) -> bool:
        """Whether the key is active at ``now`` and ``secret_hash`` is still one of its
        secrets (the current one, or the previous one within its grace period).
        ``None`` checks the status alone."""
        if self.status != "active" or (self.expires_at is not None and self.expires_at <= now):
            return False
        if secret_hash is None or secret_hash == self.secret_hash:
            return True
        return (
            secret_hash == self.previous_secret_hash
            and self.previous_valid_until is not None
            and self.previous_valid_until > now
        )


def upsert_sql(first: int = 1) -> str:
    """Upsert one registry row per key from ten arrays, ``$first``… (see ``upsert_columns``)."""
    p = [f"${n}" for n in range(first, first + 10)]
    return f"""
    INSERT INTO key_registry (key_id, org_id, environment, status, expires_at,
        secret_hash, previous_secret_hash, previous_valid_until, version, position)
    SELECT * FROM unnest({p[0]}::text[], {p[1]}::text[], {p[2]}::text[], {p[3]}::text[],
        {p[4]}::timestamptz[], {p[5]}::text[], {p[6]}::text[], {p[7]}::timestamptz[],
        {p[8]}::int[], {p[9]}::bigint[])
    ON CONFLICT (key_id) DO UPDATE SET
        status = EXCLUDED.status,
        expires_at = EXCLUDED.expires_at,
        secret_hash = EXCLUDED.secret_hash,
        previous_secret_hash = EXCLUDED.previous_secret_hash,
        previous_valid_until = EXCLUDED.previous_valid_until,
        version = EXCLUDED.version,
        position = EXCLUDED.position"""


def upsert_columns(states: Iterable[KeyState]) -> list[list[Any]]:
    """The arrays ``upsert_sql`` takes, one element per state (one state per key)."""
    rows = [
        (
            state.key_id,
            state.org_id,
            state.environment,
            state.status,
            state.expires_at,
            state.secret_hash,
            state.previous_secret_hash,
            state.previous_valid_until,
            state.version,
            state.position,
        )
        for state in states
    ]
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 10


def count_active_sql(first: int = 1) -> str:
    """Active-slot counts for arrays of (org, environment, at) from ``$first``, in their order."""
    org, environment, at = (f"${n}" for n in range(first, first + 3))
    return f"""SELECT (SELECT count(*) FROM key_registry r
                   WHERE r.org_id = w.org_id AND r.environment = w.environment
                     AND r.status = 'active' AND (r.expires_at IS NULL OR r.expires_at > w.at))
               FROM unnest({org}::text[], {environment}::text[], {at}::timestamptz[])
                   WITH ORDINALITY AS w(org_id, environment, at, n)
               ORDER BY w.n"""


def standings_sql(first: int = 1) -> str:
    """Rows ``standing_of`` reads, for the service keys in the array ``$first``."""
    return f"""SELECT ROW(key_id, status, expires_at, secret_hash, previous_secret_hash,
                          previous_valid_until)
               FROM key_registry WHERE key_id = ANY(${first}::text[]) AND org_id = '{SYSTEM_ORG}'"""


def standing_of(row: Sequence[Any]) -> tuple[str, CallerStanding]:
    """A row of ``standings_sql``: the key id and its standing."""
    key_id, status, expires_at, secret_hash, previous_hash, previous_until = row
    return key_id, CallerStanding(status, expires_at, secret_hash, previous_hash, previous_until)


class KeyRegistry:
    """Active-key counts and secret-hash lookup for the write side."""

    async def save(self, conn: asyncpg.Connection, state: KeyState) -> None:
        """Record ``state`` as the key's current registry row."""
        await conn.execute(upsert_sql(), *upsert_columns([state]))

    async def standings(
        self, conn: asyncpg.Connection, key_ids: list[str]
    ) -> dict[str, CallerStanding]:
        """The standing of each of these service keys (absent: not a service key)."""
        rows = await conn.fetchval(f"SELECT ARRAY({standings_sql()})", key_ids)
        return dict(standing_of(row) for row in rows)

    async def save_all(self, conn: asyncpg.Connection, states: Sequence[KeyState]) -> None:
        """``save`` for many keys in one statement (one state per key)."""
        if states:
            await conn.execute(upsert_sql(), *upsert_columns(states))

    async def revocable(
        self,
        conn: asyncpg.Connection,
        org_id: str,
        *,
        environment: Environment | None,
        created_by: str | None,
        limit: int,
    ) -> list[str]:
        """Up to ``limit`` keys of ``org_id`` not revoked yet, oldest first: every one, or
        those of ``environment``, or those whose ``KeyGenerated`` has actor ``created_by``."""
        rows = await conn.fetch(
            """SELECT r.key_id FROM key_registry r
               WHERE r.org_id = $1 AND r.status <> 'revoked'
                 AND ($2::text IS NULL OR r.environment = $2)
                 AND ($3::text IS NULL OR EXISTS (
                     SELECT 1 FROM events e
                     WHERE e.key_id = r.key_id AND e.stream_version = 1
                       AND (e.actor ->> 'id') = $3))
               ORDER BY r.key_id LIMIT $4""",
            org_id,
            environment,
            created_by,
            limit,
        )
        return [r["key_id"] for r in rows]

    async def find_by_secret_hash(
        self, conn: asyncpg.Connection, secret_hash: str, now: datetime
    ) -> str | None:
        """The key whose current, or still-in-grace previous, secret has this hash."""
        key_id: str | None = await conn.fetchval(
            """SELECT key_id FROM key_registry WHERE secret_hash = $1
               UNION ALL
               SELECT key_id FROM key_registry
               WHERE previous_secret_hash = $1 AND previous_valid_until > $2
               LIMIT 1""",
            secret_hash,
            now,
        )
        return key_id

    async def due_for_warning(
        self, conn: asyncpg.Connection, now: datetime, horizon: datetime
    ) -> list[tuple[str, str, datetime, set[tuple[str, str]]]]:
        """Keys expiring after ``now`` and by ``horizon``: (key_id, org_id, expires_at, warned).

        ``warned`` holds (lead, expires_at as logged) of the key's ``KeyExpiringSoon`` events,
        so that the sweeper asks the decider only about warnings not yet written.
        """
        rows = await conn.fetch(
            """SELECT r.key_id, r.org_id, r.expires_at,
                      coalesce(array_agg(e.data ->> 'lead') FILTER (WHERE e.position IS NOT NULL),
                               '{}') AS leads,
                      coalesce(array_agg(e.data ->> 'expires_at')
                               FILTER (WHERE e.position IS NOT NULL), '{}') AS instants
               FROM (SELECT key_id, org_id, expires_at FROM key_registry
                     WHERE status IN ('active', 'disabled') AND expires_at > $1
                       AND expires_at <= $2
                     ORDER BY expires_at LIMIT 500) AS r
               LEFT JOIN events AS e
                 ON e.key_id = r.key_id AND e.event_type = 'KeyExpiringSoon'
               GROUP BY r.key_id, r.org_id, r.expires_at""",
            now,
            horizon,
        )
        return [
            (
                r["key_id"],
                r["org_id"],
                r["expires_at"],
                set(zip(r["leads"], r["instants"], strict=True)),
            )
            for r in rows
        ]

    async def due_for_expiry(
        self, conn: asyncpg.Connection, now: datetime
    ) -> list[tuple[str, str]]:
        """(key_id, org_id) of keys past ``expires_at`` whose ``KeyExpired`` is not written."""
        rows = await conn.fetch(
            """SELECT key_id, org_id FROM key_registry
               WHERE status IN ('active', 'disabled') AND expires_at <= $1
               ORDER BY expires_at LIMIT 500""",
            now,
        )
        return [(r["key_id"], r["org_id"]) for r in rows]


def _pairs(leads: list[str], instants: list[str]) -> set[tuple[str, str]]:
    return set(zip(leads, instants, strict=True))
