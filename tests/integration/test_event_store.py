"""The event log in PostgreSQL: append-only, versioned, chained, gap-free."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import asyncpg
import pytest

from bench.support import scratch_database
from events.codec import GENESIS_HASH, chain_hash, envelope_body
from events.models import Actor, KeyDisabled, KeyGenerated
from service.domain.ids import new_key_id
from service.store.event_store import EventStore
from service.store.migrate import migrate, migration_files

ACTOR = Actor(id="test")


@pytest.fixture
async def log_pool(postgres_server_url: str):
    """A database of its own: these tests reason about the whole log."""
    async with scratch_database(postgres_server_url) as url:
        conn = await asyncpg.connect(url)
        await migrate(conn)
        await conn.close()
        pool = await asyncpg.create_pool(url, min_size=1, max_size=12)
        yield pool
        await pool.close()


def generated(key_id: str) -> KeyGenerated:
    return KeyGenerated(
        key_id=key_id,
        org_id="acme",
        occurred_at=datetime.now(UTC),
        name="k",
        type="secret",
        environment="live",
        secret_hash="a" * 64,
    )


async def append_one(pool: asyncpg.Pool, store: EventStore, key_id: str | None = None) -> int:
    async with pool.acquire() as conn, conn.transaction():
        await store.lock(conn)
        [envelope] = await store.append(
            conn, [generated(key_id or new_key_id())], actor=ACTOR, expected_version=0
        )
        return envelope.position


@pytest.mark.parametrize(
    "statement",
    ["UPDATE events SET event_type = 'KeyRevoked'", "DELETE FROM events", "TRUNCATE events"],
)
async def test_the_database_refuses_changes_to_events(log_pool: asyncpg.Pool, statement: str):
    await append_one(log_pool, EventStore())
    with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
        await log_pool.execute(statement)
    assert await log_pool.fetchval("SELECT count(*) FROM events") == 1


async def test_stream_versions_are_unique(log_pool: asyncpg.Pool) -> None:
    store = EventStore()
    key_id = new_key_id()
    await append_one(log_pool, store, key_id)
    async with log_pool.acquire() as conn:
        with pytest.raises(Exception) as caught:
            async with conn.transaction():
                await store.lock(conn)
                event = KeyDisabled(key_id=key_id, org_id="acme", occurred_at=datetime.now(UTC))
                await store.append(conn, [event], actor=ACTOR, expected_version=0)
        assert getattr(caught.value, "code", None) == "version_mismatch"
        assert len(await store.load_stream(conn, key_id)) == 1


async def test_positions_are_dense_and_the_chain_links(log_pool: asyncpg.Pool) -> None:
    store = EventStore()
    await asyncio.gather(*(append_one(log_pool, store) for _ in range(40)))
    async with log_pool.acquire() as conn:
        envelopes = await store.read_after(conn, 0, limit=100)
        assert await store.head(conn) == 40
    assert [e.position for e in envelopes] == list(range(1, 41))
    previous = GENESIS_HASH
    for envelope in envelopes:
        assert envelope.hash == chain_hash(previous, envelope_body(envelope))
        previous = envelope.hash


async def test_a_reader_never_skips_an_event_that_commits_late(log_pool: asyncpg.Pool) -> None:
    """One writer holds its transaction open; others queue behind it; a reader
    polling in position order sees every event exactly once, in order."""
    store = EventStore()
    seen: list[int] = []

    async def read_new() -> None:
        async with log_pool.acquire() as conn:
            for envelope in await store.read_after(conn, seen[-1] if seen else 0):
                seen.append(envelope.position)

    slow = await log_pool.acquire()
    transaction = slow.transaction()
    await transaction.start()
    await store.lock(slow)
    [held] = await store.append(slow, [generated(new_key_id())], actor=ACTOR, expected_version=0)

    others = [asyncio.create_task(append_one(log_pool, store)) for _ in range(10)]
    await asyncio.sleep(0.3)
    await read_new()
    assert seen == []  # nothing is visible past the open transaction's position
    assert not any(task.done() for task in others)

    await transaction.commit()
    await log_pool.release(slow)
    while not all(task.done() for task in others) or len(seen) < 11:
        await read_new()
        await asyncio.sleep(0.01)
    assert seen == list(range(1, 12))
    assert held.position == 1
    assert sorted(task.result() for task in others) == list(range(2, 12))


async def test_migrations_apply_once_under_concurrent_starts(postgres_server_url: str) -> None:
    async with scratch_database(postgres_server_url) as url:
        conns = [await asyncpg.connect(url) for _ in range(3)]
        try:
            results = await asyncio.gather(*(migrate(c) for c in conns))
            assert sorted(len(r) for r in results) == [0, 0, len(migration_files())]
            versions = await conns[0].fetch("SELECT version FROM schema_migrations")
            assert len(versions) == len(migration_files())
        finally:
            for conn in conns:
                await conn.close()
