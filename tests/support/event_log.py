"""Writing events straight through the event store, below the HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg

from events.models import Actor, Envelope, KeyGenerated, KeyRenamed
from service.domain.ids import new_key_id
from service.store.event_store import LOG_LOCK, EventStore

TEST_ACTOR = Actor(id="test:event-log")


def generated(org_id: str, name: str = "direct") -> KeyGenerated:
    """A ``KeyGenerated`` for a fresh key id (no real secret behind its hash)."""
    return KeyGenerated(
        key_id=new_key_id(),
        org_id=org_id,
        occurred_at=datetime.now(UTC),
        name=name,
        type="secret",
        environment="live",
        secret_hash="ab" * 32,
        hint="sk_live_AAAA…ZZZZ",
    )


async def append_key(conn: asyncpg.Connection, org_id: str, name: str = "direct") -> Envelope:
    """Append one ``KeyGenerated`` in its own transaction under the append lock."""
    store = EventStore()
    async with conn.transaction():
        await store.lock(conn)
        [envelope] = await store.append(
            conn, [generated(org_id, name)], actor=TEST_ACTOR, expected_version=0
        )
    return envelope


async def append_rename(
    conn: asyncpg.Connection, key: Envelope, version: int, name: str
) -> Envelope:
    """Append a ``KeyRenamed`` for ``key`` at stream ``version`` + 1."""
    store = EventStore()
    event = KeyRenamed(
        key_id=key.key_id,
        org_id=key.org_id,
        occurred_at=datetime.now(UTC),
        name=name,
        previous_name="?",
    )
    async with conn.transaction():
        await store.lock(conn)
        [envelope] = await store.append(conn, [event], actor=TEST_ACTOR, expected_version=version)
    return envelope


@contextlib.asynccontextmanager
async def append_lock_held(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """Hold the log's append lock in another transaction until the block ends."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", LOG_LOCK)
        yield


async def writers_waiting_for_lock(pool: asyncpg.Pool, count: int = 1) -> None:
    """Wait until ``count`` transactions are blocked on the append lock."""
    for _ in range(500):
        waiting = await pool.fetchval(
            """SELECT count(*) FROM pg_locks
               WHERE locktype = 'advisory' AND NOT granted AND database =
                   (SELECT oid FROM pg_database WHERE datname = current_database())"""
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("no writer is waiting for the append lock")
