"""Registry snapshots in PostgreSQL: written by one replica, refused unless they check out,
and a replica started from one holds what a replica that folded the whole log holds."""

from __future__ import annotations

import asyncio
import io
import json
import secrets
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench.support import migrated_database
from events.models import Actor, IdentityConfigured, NamedRateLimit, identity_stream_id
from projections.key_views import KeyViews
from projections.rebuild import rebuild
from service.http.app import create_app
from service.http.context import KEYLEDGER
from service.service_keys import issue_service_key
from service.settings import Settings
from service.snapshot_writer import SNAPSHOT_LOCK_CLASS, SnapshotWriter
from service.store.chunk_builder import encode_chunk
from service.store.event_store import EventStore
from service.store.registry_snapshot import SnapshotStore
from service.verification.feed import IndexFeed
from service.verification.index import VerificationIndex
from tests.support.api import indexed
from tests.support.event_log import TEST_ACTOR
from tests.support.snapshot_log import grow, loaded, picture, snapshot_log_database

_store = EventStore()
PEPPER = ("snapshots-" + secrets.token_hex(16)).encode()


@pytest.fixture
async def log_db(postgres_server_url: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A database of its own with a few keys, renames and a poison event in its log."""
    async with snapshot_log_database(postgres_server_url) as (url, pool):
        yield url, pool


async def test_a_snapshot_and_the_log_after_it_hold_what_the_whole_log_holds(
    log_db: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = log_db
    writer = SnapshotWriter(pool, PEPPER, interval_seconds=60, events_per_snapshot=7)
    header = await writer.write_once()
    assert header is not None and header.keys == 5
    assert await writer.write_once() is None  # already at the head
    async with pool.acquire() as conn:
        await grow(conn, "org-b", 3)
        head = await conn.fetchval("SELECT max(position) FROM events")

    from_snapshot = await loaded(pool, url, SnapshotStore(PEPPER))
    whole_log = await loaded(pool, url, None)
    assert from_snapshot.index.position == head
    assert picture(from_snapshot.index) == picture(whole_log.index)
    assert len(from_snapshot.index.quarantined) == 2

    # Advanced (from the newest snapshot and the log after it): the same again.
    advanced = await writer.write_once()
    assert advanced is not None and advanced.position == head
    index = VerificationIndex()
    feed = IndexFeed(index, pool, url, snapshots=SnapshotStore(PEPPER))
    assert await feed.load_snapshot() == head
    assert picture(index) == picture(whole_log.index)
    async with pool.acquire() as conn:
        kept = await conn.fetchval("SELECT count(*) FROM registry_snapshots")
    assert kept == 2  # the default keep


async def _damage(conn: asyncpg.Connection, how: str, pool: asyncpg.Pool) -> SnapshotStore:
    """Damage the newest snapshot ``how``; the store a replica reads it with."""
    store = SnapshotStore(PEPPER)
    newest = (await store.newest(conn, 1))[0]
    if how == "chunk":
        await conn.execute(
            "UPDATE registry_snapshot_chunks SET body = overlay(body placing '\\xff'::bytea"
            " from length(body) / 2) WHERE snapshot_id = $1",
            newest.id,
        )
    elif how == "header":
        await conn.execute("UPDATE registry_snapshots SET keys = keys + 1 WHERE id = $1", newest.id)
    elif how == "quarantine":
        await conn.execute(
            "UPDATE registry_snapshots SET quarantined = '[]' WHERE id = $1", newest.id
        )
    elif how == "format":
        await conn.execute(
            "UPDATE registry_snapshots SET format = 'v0-old' WHERE id = $1", newest.id
        )
    elif how == "pepper":
        store = SnapshotStore(b"another-pepper-" + secrets.token_hex(16).encode())
    elif how == "another_log":
        # Sealed with the right pepper, but claiming a hash this log does not have there.
        async def chunks() -> AsyncIterator[tuple[bytes, int]]:
            yield encode_chunk([]), 0

        await store.write(conn, position=newest.position, log_hash="e" * 64, chunks=chunks())
        await conn.execute("DELETE FROM registry_snapshots WHERE id = $1", newest.id)
    elif how == "missing_chunk":
        await conn.execute("DELETE FROM registry_snapshot_chunks WHERE snapshot_id = $1", newest.id)
    elif how == "truncated_log":
        await conn.execute("UPDATE registry_snapshots SET position = position + 1000")
    return store


@pytest.mark.parametrize(
    "how",
    [
        "chunk",
        "header",
        "quarantine",
        "format",
        "pepper",
        "another_log",
        "missing_chunk",
        "truncated_log",
    ],
)
async def test_a_snapshot_that_does_not_check_out_is_refused_and_the_log_folded(
    log_db: tuple[str, asyncpg.Pool], how: str, captured_logs: io.StringIO
) -> None:
    url, pool = log_db
    await SnapshotWriter(pool, PEPPER, interval_seconds=60).write_once()
    async with pool.acquire() as conn:
        store = await _damage(conn, how, pool)
    logged_before = len(captured_logs.getvalue())

    feed = IndexFeed(VerificationIndex(), pool, url, snapshots=store)
    assert await feed.load_snapshot() is None
    assert len(feed.index) == 0 and feed.index.position == 0
    warnings = [
        json.loads(line)
        for line in captured_logs.getvalue()[logged_before:].splitlines()
        if "registry_snapshot_refused" in line
    ]
    assert warnings and all(w["level"] == "warning" for w in warnings)

    await feed.start(follow_postgres=False)
    assert picture(feed.index) == picture((await loaded(pool, url, None)).index)


async def test_an_older_snapshot_serves_when_the_newest_is_damaged(
    log_db: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = log_db
    writer = SnapshotWriter(pool, PEPPER, interval_seconds=60)
    older = await writer.write_once()
    async with pool.acquire() as conn:
        await grow(conn, "org-b", 1)
        assert await writer.write_once() is not None
        await _damage(conn, "chunk", pool)
    feed = IndexFeed(VerificationIndex(), pool, url, snapshots=SnapshotStore(PEPPER))
    assert older is not None and await feed.load_snapshot() == older.position


async def test_one_replica_writes_at_a_time(
    log_db: tuple[str, asyncpg.Pool], postgres_server_url: str
) -> None:
    url, pool = log_db
    async with asyncpg.create_pool(url, min_size=1, max_size=2) as other_pool:
        writers = [
            SnapshotWriter(pool, PEPPER, interval_seconds=60),
            SnapshotWriter(other_pool, PEPPER, interval_seconds=60),
        ]
        # While another replica holds the lock, neither writes.
        async with pool.acquire() as holder:
            await holder.execute("SELECT pg_advisory_lock($1, 1)", SNAPSHOT_LOCK_CLASS)
            assert await asyncio.gather(*(w.write_once() for w in writers)) == [None, None]
            await holder.execute("SELECT pg_advisory_unlock($1, 1)", SNAPSHOT_LOCK_CLASS)
        written = await asyncio.gather(*(w.write_once() for w in writers))
    assert sum(header is not None for header in written) == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM registry_snapshots") == 1


async def test_a_replica_starts_from_a_snapshot_and_is_ready_at_the_head(
    postgres_server_url: str, settings: Settings, captured_logs: io.StringIO
) -> None:
    async with migrated_database(postgres_server_url, prefix="keyledger_snap") as (url, pool):
        first = settings.replace(database_url=url, snapshot_interval_seconds=0)
        async with TestClient(TestServer(create_app(first))) as client:
            issued = await issue_service_key(
                pool, settings.pepper_bytes, name="admin", scopes=["admin"], actor=Actor(id="t")
            )
            await indexed(client, issued.position)
            auth = {"Authorization": f"Bearer {issued.secret}"}
            made = []
            for name in ("kept", "revoked later"):
                response = await client.post(
                    "/v1/orgs/acme/keys", json={"name": name, "type": "secret"}, headers=auth
                )
                assert response.status == 201
                made.append(await response.json())
            header = await SnapshotWriter(
                pool, settings.pepper_bytes, interval_seconds=60
            ).write_once()
            assert header is not None
            # After the snapshot: a revocation, which the new replica must not miss.
            response = await client.post(
                f"/v1/orgs/acme/keys/{made[1]['key']['id']}/revoke",
                json={"reason": "compromised"},
                headers=auth,
            )
            assert response.status == 200
            head = (await response.json())["position"]
        logged_before = len(captured_logs.getvalue())

        second = create_app(first)
        async with TestClient(TestServer(second)) as client:
            service = second[KEYLEDGER]
            assert service.index.loaded and service.index.position == head
            loaded = [
                json.loads(line)
                for line in captured_logs.getvalue()[logged_before:].splitlines()
                if "verification_index_loaded" in line
            ]
            assert loaded[-1]["snapshot_position"] == header.position < head
            response = await client.get("/readyz")
            assert response.status == 200, await response.text()
            verdicts = []
            for created in made:
                response = await client.post(
                    "/v1/verify", json={"key": created["secret"]}, headers=auth
                )
                verdicts.append((await response.json())["code"])
            assert verdicts == ["VALID", "REVOKED"]

            # An index that has not reached the head after its load is not ready.
            service.index.loaded = False
            try:
                response = await client.get("/readyz")
                assert response.status == 503
                assert "verification index: not loaded" in (await response.json())["problems"]
            finally:
                service.index.loaded = True


async def test_key_views_rebuilt_from_a_snapshot_match_a_rebuild_from_the_first_event(
    log_db: tuple[str, asyncpg.Pool],
) -> None:
    _, pool = log_db
    await SnapshotWriter(pool, PEPPER, interval_seconds=60).write_once()
    async with pool.acquire() as conn:
        await grow(conn, "org-b", 2)
    views = KeyViews()
    whole = await rebuild(pool, views)
    async with pool.acquire() as conn:
        expected = await views.all_rows(conn)
        expected_quarantine = await conn.fetch(
            "SELECT key_id, position FROM quarantined_keys WHERE consumer = 'key_views'"
            " ORDER BY key_id"
        )
    from_snapshot = await rebuild(pool, views, snapshots=SnapshotStore(PEPPER))
    assert from_snapshot.position == whole.position
    assert from_snapshot.started_from is not None
    async with pool.acquire() as conn:
        got = await views.all_rows(conn)
        assert [r["key_id"] for r in got] == [r["key_id"] for r in expected]
        for mine, theirs in zip(got, expected, strict=True):
            assert {k: v for k, v in mine.items() if v != theirs[k]} == {}
        assert (
            await conn.fetch(
                "SELECT key_id, position FROM quarantined_keys WHERE consumer = 'key_views'"
                " ORDER BY key_id"
            )
            == expected_quarantine
        )


async def test_the_sessions_hostile_log_snapshots_and_folds_like_the_whole_log(
    pool: asyncpg.Pool, database_url: str, settings: Settings
) -> None:
    # Whatever the session's log holds by now (poison rows included), in its own schema
    # version of the fold; an append between the two loads is retried.
    writer = SnapshotWriter(pool, settings.pepper_bytes, interval_seconds=60)
    for _ in range(5):
        await writer.write_once()
        from_snapshot = await loaded(pool, database_url, SnapshotStore(settings.pepper_bytes))
        whole_log = await loaded(pool, database_url, None)
        if from_snapshot.index.position == whole_log.index.position:
            break
    assert picture(from_snapshot.index) == picture(whole_log.index)
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM registry_snapshots")


async def _configure(
    conn: asyncpg.Connection, org: str, identity: str, limit: int, version: int
) -> None:
    """An ``IdentityConfigured`` appended as the API appends it."""
    event = IdentityConfigured(
        key_id=identity_stream_id(org, identity),
        org_id=org,
        occurred_at=datetime.now(UTC),
        identity_id=identity,
        rate_limits=(NamedRateLimit(name="customer", limit=limit, window="1h"),),
        existed=version > 0,
    )
    async with conn.transaction():
        await _store.lock(conn)
        await _store.append(conn, [event], actor=TEST_ACTOR, expected_version=version)


async def test_identities_survive_a_cold_start_from_a_snapshot(
    log_db: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = log_db
    async with pool.acquire() as conn:
        await _configure(conn, "org-a", "cus_1", 10, 0)
        await _configure(conn, "org-a", "cus_2", 20, 0)
    writer = SnapshotWriter(pool, PEPPER, interval_seconds=60, events_per_snapshot=7)
    header = await writer.write_once()
    assert header is not None and header.keys == 5  # identities are no keys
    async with pool.acquire() as conn:
        await _configure(conn, "org-a", "cus_1", 11, 1)  # changed after the snapshot
        await _configure(conn, "org-a", "cus_3", 30, 0)  # new after it

    from_snapshot = await loaded(pool, url, SnapshotStore(PEPPER))
    whole_log = await loaded(pool, url, None)
    assert picture(from_snapshot.index) == picture(whole_log.index)
    limits = {
        stream: [limit.limit for limit in shared[1]]
        for stream, shared in from_snapshot.index.identities.items()
    }
    assert limits == {
        identity_stream_id("org-a", "cus_1"): [11],
        identity_stream_id("org-a", "cus_2"): [20],
        identity_stream_id("org-a", "cus_3"): [30],
    }
    assert whole_log.index.identities == from_snapshot.index.identities
    # Neither index took an identity's stream for a poisoned key.
    assert len(from_snapshot.index.quarantined) == len(whole_log.index.quarantined) == 1
