"""The verification index: loading, following, gaps, JetStream, and no DB on the hot path."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import asyncpg
import nats
import pytest
from aiohttp.test_utils import TestClient

from events.codec import envelope_to_json
from service.domain import key_material
from service.embedded import free_port
from service.errors import KeyledgerError
from service.http.context import KEYLEDGER
from service.settings import Settings
from service.store.event_store import EventStore
from service.store.key_registry import KeyRegistry
from service.verification.feed import IndexFeed
from service.verification.index import VerificationIndex
from service.verification.policy import Requirements
from tests.support.api import Api, new_org

_QUERY_METHODS = ("execute", "executemany", "fetch", "fetchrow", "fetchval", "prepare")


@contextmanager
def queries_by_task() -> Iterator[dict[asyncio.Task[Any] | None, int]]:
    """Count every asyncpg query, by the task that issued it."""
    counts: dict[asyncio.Task[Any] | None, int] = {}
    originals = {name: getattr(asyncpg.Connection, name) for name in _QUERY_METHODS}

    def counting(original: Callable[..., Any]) -> Callable[..., Any]:
        async def wrapper(self: asyncpg.Connection, *args: Any, **kwargs: Any) -> Any:
            task = asyncio.current_task()
            counts[task] = counts.get(task, 0) + 1
            return await original(self, *args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(asyncpg.Connection, name, counting(original))
    try:
        yield counts
    finally:
        for name, original in originals.items():
            setattr(asyncpg.Connection, name, original)


async def test_hot_path_makes_no_database_round_trip(
    api: Api, client: TestClient, admin_key: str
) -> None:
    created = await api.generate(new_org(), scopes=["a:*"])
    verifier = client.app[KEYLEDGER].verifier
    assert await verifier.feed.wait_for(created["position"], 5.0)
    me = asyncio.current_task()
    with queries_by_task() as counts:
        for _ in range(200):
            caller = await client.app[KEYLEDGER].callers.authenticate(admin_key)
            verdict = await verifier.verify(
                created["secret"], Requirements(scopes=("a:b",)), can_see_org=caller.can_see_org
            )
            assert verdict.code == "VALID"
        assert counts.get(me, 0) == 0
        # The counter does see queries: a position past the head needs the database.
        with pytest.raises(KeyledgerError):
            await verifier.verify(created["secret"], Requirements(), min_position=10**12)
        assert counts.get(me, 0) >= 1


async def test_loads_from_the_log_and_records_its_position(
    api: Api, pool: asyncpg.Pool, settings: Settings
) -> None:
    created = await api.generate(new_org())
    index = VerificationIndex()
    feed = IndexFeed(index, pool, settings.database_url or "")
    await feed.start(follow_postgres=False)
    try:
        async with pool.acquire() as conn:
            head = await EventStore().head(conn)
        assert feed.loaded_position == index.position == head >= created["position"]
        assert index.by_key_id(created["key"]["id"]) is not None
        assert index.lag == 0
    finally:
        await feed.stop()


async def test_a_gap_is_filled_from_postgres(
    api: Api, pool: asyncpg.Pool, settings: Settings
) -> None:
    index = VerificationIndex()
    feed = IndexFeed(index, pool, settings.database_url or "")
    await feed.start(follow_postgres=False)
    try:
        loaded = index.position
        first = await api.generate(new_org())
        second = await api.generate(new_org())
        async with pool.acquire() as conn:
            envelopes = await EventStore().read_after(conn, loaded)
        later = next(e for e in envelopes if e.position == second["position"])
        feed.offer(envelope_to_json(later))  # as if JetStream skipped an event
        assert index.position == loaded
        assert index.lag >= second["position"] - loaded
        await feed.catch_up()
        assert index.position >= second["position"]
        assert index.by_key_id(first["key"]["id"]) is not None
        assert index.by_key_id(second["key"]["id"]) is not None
        assert index.lag == 0
    finally:
        await feed.stop()


async def test_follows_jetstream_alone(
    api: Api, pool: asyncpg.Pool, settings: Settings, nats_url: str
) -> None:
    token = uuid.uuid4().hex[:10]
    stream, prefix = f"VERIFYTEST_{token}", f"verifytest.{token}"
    client = await nats.connect(nats_url)
    js = client.jetstream()
    await js.add_stream(name=stream, subjects=[f"{prefix}.>"])
    index = VerificationIndex()
    feed = IndexFeed(
        index,
        pool,
        settings.database_url or "",
        # A cluster's list, its first server down: the feed must move on to the live one.
        nats_url=f"nats://127.0.0.1:{free_port()}, {nats_url}",
        nats_stream=stream,
        nats_subject_prefix=prefix,
    )
    try:
        await feed.start(follow_postgres=False)
        for _ in range(200):
            if feed.jetstream_connected:
                break
            await asyncio.sleep(0.02)
        assert feed.jetstream_connected
        created = await api.generate(new_org())
        async with pool.acquire() as conn:
            envelopes = await EventStore().read_after(conn, index.position)
        for envelope in envelopes:  # what the outbox relay publishes
            await js.publish(
                f"{prefix}.{envelope.org_id}.{envelope.key_id}.{envelope.event_type}",
                envelope_to_json(envelope).encode(),
                headers={"Nats-Msg-Id": str(envelope.event_id)},
            )
        assert await feed.wait_for(created["position"], 5.0)
        assert index.by_key_id(created["key"]["id"]) is not None
    finally:
        await feed.stop()
        await js.delete_stream(stream)
        await client.close()


async def test_unknown_secrets_are_refused_from_the_index_alone(
    client: TestClient, admin_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flood of random well-formed secrets costs no query while the index is caught up."""
    lookups: list[str] = []
    original = KeyRegistry.find_by_secret_hash

    async def counted(self: KeyRegistry, conn: Any, digest: str, now: Any) -> str | None:
        lookups.append(digest)
        return await original(self, conn, digest, now)

    monkeypatch.setattr(KeyRegistry, "find_by_secret_hash", counted)
    index = client.app[KEYLEDGER].verifier.index
    assert await client.app[KEYLEDGER].verifier.feed.wait_for(index.head_seen, 5.0)
    assert index.caught_up

    me = asyncio.current_task()
    with queries_by_task() as counts:
        for _ in range(50):
            with pytest.raises(KeyledgerError) as refused:
                await client.app[KEYLEDGER].callers.authenticate(
                    key_material.new_secret("secret", "live")
                )
            assert refused.value.code == "invalid_api_key"
            verdict = await client.app[KEYLEDGER].verifier.verify(
                key_material.new_secret("embed", "test"), Requirements()
            )
            assert verdict.code == "NOT_FOUND"
        assert counts.get(me, 0) == 0
    for secret in (key_material.new_secret("secret", "live") for _ in range(50)):
        response = await client.post(
            "/v1/verify", json={"key": secret}, headers={"Authorization": f"Bearer {secret}"}
        )
        assert response.status == 401
        assert (await response.json())["error"]["code"] == "invalid_api_key"
        response = await client.post(
            "/v1/verify", json={"key": secret}, headers={"Authorization": f"Bearer {admin_key}"}
        )
        assert (await response.json())["code"] == "NOT_FOUND"
    assert lookups == []

    # The counter does count: an index that has heard of a position it has not
    # applied yet cannot tell "unknown" from "not here yet", so it asks PostgreSQL.
    monkeypatch.setattr(index, "head_seen", index.position + 1)
    assert not index.caught_up
    with pytest.raises(KeyledgerError):
        await client.app[KEYLEDGER].callers.authenticate(key_material.new_secret("secret", "live"))
    assert len(lookups) == 1
