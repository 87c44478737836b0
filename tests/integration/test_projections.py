"""The projection runner and the key_views projection against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp.test_utils import TestClient

from events.codec import to_domain_event
from events.models import Envelope
from projections.key_views import KeyFilter, KeyViews
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from service.http.context import KEYLEDGER
from service.key_usage import UsageRecorder
from service.key_view import render_key
from service.store.event_store import EventStore, LoggedEvent
from tests.support.api import Api, new_org
from tests.support.event_log import TEST_ACTOR, append_key, append_rename, generated

store = EventStore()


class Recorder:
    """A projection that remembers the positions it was given, in order."""

    table = None

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[int] = []

    async def apply(self, conn: asyncpg.Connection, events: Sequence[LoggedEvent]) -> None:
        self.seen.extend(e.position for e in events)

    def on_table(self, table: str) -> Recorder:
        return self

    async def flush(self, conn: asyncpg.Connection) -> None:
        return None

    async def carry_over(self, conn: asyncpg.Connection, old_table: str, new_table: str) -> None:
        return None


async def _append_on_own_connection(database_url: str, org: str) -> Envelope:
    conn = await asyncpg.connect(database_url)
    try:
        return await append_key(conn, org)
    finally:
        await conn.close()


async def _head(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return await store.head(conn)


async def _caught_up(client: TestClient, pool: asyncpg.Pool) -> int:
    head = await _head(pool)
    assert await client.app[KEYLEDGER].projections.wait_for("key_views", head, within=10)
    return head


async def test_a_late_commit_is_applied_in_order_and_nothing_is_skipped(
    pool: asyncpg.Pool, database_url: str
) -> None:
    recorder = Recorder(f"test_recorder_{uuid.uuid4().hex[:8]}")
    runner = ProjectionRunner(
        pool, database_url, [recorder], batch_size=3, fallback_poll_seconds=30
    )
    await runner.start()
    org = new_org()
    try:
        held = await asyncpg.connect(database_url)
        try:
            transaction = held.transaction()
            await transaction.start()
            await store.lock(held)
            [late] = await store.append(
                held, [generated(org)], actor=TEST_ACTOR, expected_version=0
            )
            writers = [
                asyncio.create_task(_append_on_own_connection(database_url, org)) for _ in range(5)
            ]
            await asyncio.sleep(0.2)  # let the writers queue behind the held append lock
            assert not any(w.done() for w in writers)
            runner.wake()
            await asyncio.sleep(0.1)
            # The uncommitted event cannot be seen, so the runner cannot pass it.
            assert runner.position(recorder.name) < late.position
            await transaction.commit()
        finally:
            await held.close()
        positions = sorted([late.position] + [(await w).position for w in writers])
        assert positions == list(range(late.position, late.position + 6))
        assert await runner.wait_for(recorder.name, positions[-1], within=10)
        assert recorder.seen == list(range(1, positions[-1] + 1))
        assert runner.failures() == {}
    finally:
        await runner.stop()

    # A new runner with the same checkpoint continues exactly after it: no event twice.
    async with pool.acquire() as conn:
        more = [await append_key(conn, org) for _ in range(3)]
    successor = Recorder(recorder.name)
    runner = ProjectionRunner(pool, database_url, [successor], fallback_poll_seconds=30)
    await runner.start()
    try:
        assert await runner.wait_for(successor.name, more[-1].position, within=10)
        assert successor.seen == list(range(positions[-1] + 1, more[-1].position + 1))
    finally:
        await runner.stop()


async def _snapshot(pool: asyncpg.Pool) -> tuple[int, list[dict]]:
    """key_views and its checkpoint, read in one snapshot."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        checkpoint = await conn.fetchval(
            "SELECT position FROM projection_checkpoints WHERE name = 'key_views'"
        )
        return checkpoint, await KeyViews().all_rows(conn)


def assert_same_up_to(checkpoint: int, live: list[dict], rebuilt: list[dict]) -> None:
    """Every live row equals its rebuilt row, unless a later event (e.g. the expiry
    sweeper's) has touched the key since the snapshot. ``last_used_at`` is not an
    event: verification may record a use meanwhile, so it may only have moved on."""
    rebuilt_by_id = {row["key_id"]: row for row in rebuilt}
    for row in live:
        other = rebuilt_by_id[row["key_id"]]
        if other["position"] <= checkpoint:
            assert {**other, "last_used_at": None} == {**row, "last_used_at": None}
            if row["last_used_at"] is not None:
                assert other["last_used_at"] >= row["last_used_at"]


async def test_key_views_match_the_write_side(
    api: Api, client: TestClient, pool: asyncpg.Pool
) -> None:
    org = new_org()
    keys = [(await api.generate(org, name=f"k{i}"))["key"]["id"] for i in range(4)]
    await api.post(f"/v1/orgs/{org}/keys/{keys[0]}/rename", {"name": "renamed"})
    await api.post(f"/v1/orgs/{org}/keys/{keys[1]}/disable", {"reason": "pause"})
    await api.post(f"/v1/orgs/{org}/keys/{keys[2]}/revoke", {"reason": "leaked"})
    await api.post(f"/v1/orgs/{org}/keys/{keys[3]}/rotate", {"grace_period": "1h"})
    await api.generate(org, type="embed", allowed_origins=["https://a.example"], resource="t1")
    await api.generate(org, type="signing", metadata={"z": 1, "a": [1, 2]})
    await _caught_up(client, pool)
    now = datetime.now(UTC)
    views = KeyViews()
    async with pool.acquire() as conn:
        page = await views.page(conn, org, KeyFilter(), before=None, limit=100, now=now)
        assert len(page) == 6
        for view in page:
            state = await store.load_state(conn, view.state.key_id)
            assert view.render(now) == render_key(state, now), view.state.key_id
            assert view.state.position == state.position


async def test_projections_read_the_same_events_as_the_envelopes_hold(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        before = await store.head(conn)
        key = await append_key(conn, new_org(), "old")
        await append_rename(conn, key, 1, "new")
        envelopes = await store.read_after(conn, before, 100)
        logged = await store.read_events_after(conn, before, len(envelopes))
    assert len(envelopes) >= 2
    assert logged == [LoggedEvent(e.position, to_domain_event(e)) for e in envelopes]


async def test_last_used_at_is_recorded_in_batches_and_never_moves_back(
    api: Api, client: TestClient, pool: asyncpg.Pool
) -> None:
    org = new_org()
    first = (await api.generate(org))["key"]["id"]
    second = (await api.generate(org))["key"]["id"]
    await _caught_up(client, pool)
    later = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    usage = UsageRecorder(pool)
    usage.touch(first, later)
    usage.touch(second, later)
    assert await usage.flush() == 2
    usage.touch(first, later - timedelta(hours=1))
    assert await usage.flush() == 1
    assert await usage.flush() == 0
    _, _, key = await api.get(f"/v1/orgs/{org}/keys/{first}")
    assert key["last_used_at"] == "2030-01-01T12:00:00.000000Z"


async def test_rebuild_equals_the_live_projection_while_the_service_answers(
    api: Api, client: TestClient, pool: asyncpg.Pool
) -> None:
    org = new_org()
    keys = [(await api.generate(org, name=f"k{i}"))["key"]["id"] for i in range(5)]
    await api.post(f"/v1/orgs/{org}/keys/{keys[0]}/disable")
    await _caught_up(client, pool)
    usage = UsageRecorder(pool)
    usage.touch(keys[1], datetime(2031, 5, 5, tzinfo=UTC))
    await usage.flush()
    views = KeyViews()

    answers: list[int] = []
    written: list[str] = []

    async def keep_using_the_service() -> None:
        for i in range(10):
            status, _, _ = await api.get(f"/v1/orgs/{org}/keys/{keys[i % 5]}")
            answers.append(status)
            written.append((await api.generate(org, environment="test", name=f"t{i}"))["key"]["id"])

    traffic = asyncio.create_task(keep_using_the_service())
    report = await rebuild(pool, views, batch_size=7)
    await traffic
    assert report.position >= 1
    assert set(answers) == {200}

    # After the swap the live runner carries on in the new table.
    await _caught_up(client, pool)
    checkpoint, live = await _snapshot(pool)
    assert {r["key_id"] for r in live} >= set(keys) | set(written)
    # Folding at most 2 keys in memory: rows are written, read back and updated.
    await rebuild(pool, KeyViews(hold_limit=2), batch_size=2)
    async with pool.acquire() as conn:
        rebuilt = await views.all_rows(conn)
        indexes = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = 'key_views'")
    assert_same_up_to(checkpoint, live, rebuilt)
    assert next(r for r in rebuilt if r["key_id"] == keys[1])["last_used_at"] == datetime(
        2031, 5, 5, tzinfo=UTC
    )
    assert {r["indexname"] for r in indexes} == {
        "key_views_pkey",
        "key_views_org_id_key_id_idx",
        "key_views_org_id_identity_id_key_id_idx",
    }


async def test_rebuild_command_line(
    api: Api, client: TestClient, pool: asyncpg.Pool, database_url: str
) -> None:
    org = new_org()
    await api.generate(org)
    await _caught_up(client, pool)
    checkpoint, before = await _snapshot(pool)
    env = {**os.environ, "KEYLEDGER_DATABASE_URL": database_url, "KEYLEDGER_LOG_LEVEL": "error"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service.cli.main", "projections", "rebuild", "key_views"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("key_views: rebuilt up to position")
    async with pool.acquire() as conn:
        assert_same_up_to(checkpoint, before, await KeyViews().all_rows(conn))

    unknown = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service.cli.main", "projections", "rebuild", "nope"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert unknown.returncode == 1 and "no projection named 'nope'" in unknown.stderr
