"""The outbox relay quarantines what cannot be published and never what NATS refuses for a while.

Each test has a database and a stream of its own.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from nats.js.api import DiscardPolicy, StorageType, StreamConfig

from bench.support import scratch_database
from service.key_commands import KeyCommandHandler
from service.outbox.relay import OutboxRelay, RelayTuning, relay_consumer
from service.settings import Settings
from service.store.event_store import EventStore
from service.store.migrate import migrate
from service.store.quarantine import QuarantineLog
from tests.support.api import new_org
from tests.support.outbox import (
    deleted_at_exit,
    eventually,
    generate_key,
    jetstream,
    revoke_key,
    stream_messages,
    unique_stream_settings,
)
from tests.support.poison import Injected, generated_data, inject, nested

FAST = RelayTuning(leader_retry_seconds=0.2, ack_timeout_seconds=1.0, max_backoff_seconds=0.5)

# Events NATS cannot carry, or that do not make an envelope at all.
UNPUBLISHABLE: dict[str, dict[str, Any]] = {
    "org id ending in a newline": {"org_id": "nl\n"},
    "org id with a space": {"org_id": "a b"},
    "org id with a dot": {"org_id": "a.b"},
    "org id that is a wildcard": {"org_id": "*"},
    "empty org id": {"org_id": ""},
    "actor not an object": {"actor": '"nobody"'},
    "data not an object": {"data": "[1, 2]"},
    "lone surrogate in the name": {"data": json.dumps(generated_data(name="a\ud800b"))},
    "larger than NATS takes": {"data": generated_data(name="x" * 1_100_000)},
}
# Events the projections cannot apply but that publish as they are: subscribers decide.
PUBLISHABLE_ODDITIES: dict[str, dict[str, Any]] = {
    "unknown event type": {"event_type": "KeyTeleported", "data": {"to": "mars"}},
    "metadata nested 300 deep": {"data": generated_data(metadata=nested(300))},
}


@pytest.fixture
async def own_database(postgres_server_url: str) -> AsyncIterator[str]:
    async with scratch_database(postgres_server_url, prefix="keyledger_poison") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield url


@pytest.fixture
async def pool(own_database: str) -> AsyncIterator[asyncpg.Pool]:
    async with asyncpg.create_pool(own_database, min_size=1, max_size=4) as created:
        yield created


@pytest.fixture
def commands(pool: asyncpg.Pool) -> KeyCommandHandler:
    return KeyCommandHandler(pool, max_active_keys=1000)


@pytest.fixture
def relay_settings(own_database: str, nats_url: str) -> Settings:
    return unique_stream_settings(
        Settings(database_url=own_database, nats_url=nats_url, pepper="unused")
    )


async def _inject(pool: asyncpg.Pool, case: dict[str, Any]) -> Injected:
    arguments = dict(case)
    org_id = arguments.pop("org_id", new_org())
    async with pool.acquire() as conn:
        return await inject(conn, org_id, **arguments)


async def _head(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return await EventStore().head(conn)


async def _published_to(relay: OutboxRelay, position: int) -> None:
    async def reached() -> bool:
        return relay.published_position >= position

    await eventually(reached, what=f"the relay to pass position {position}")


async def _published(js: Any, stream: str) -> list[dict[str, Any]]:
    """The stream's envelopes as plain JSON (one of them is too deep for ``events.decode``)."""
    return [json.loads(m.data) for m in await stream_messages(js, stream)]


async def _quarantined(pool: asyncpg.Pool, stream: str) -> dict[str, int]:
    async with pool.acquire() as conn:
        found = await QuarantineLog().of_consumer(conn, relay_consumer(stream))
    return {key_id: entry.position for key_id, entry in found.items()}


async def test_unpublishable_events_are_set_aside_and_later_ones_still_published(
    relay_settings: Settings, commands: KeyCommandHandler, pool: asyncpg.Pool
) -> None:
    stream = relay_settings.nats_stream
    async with jetstream(relay_settings.nats_url) as js, deleted_at_exit(js, stream):
        org = new_org()
        first = await generate_key(commands, org)
        relay = OutboxRelay(relay_settings, FAST)
        relay.start()
        try:
            poisoned = {}
            for label, case in {**UNPUBLISHABLE, **PUBLISHABLE_ODDITIES}.items():
                poisoned[label] = await _inject(pool, case)
                await generate_key(commands, org)
            # The revocation of the first key comes after every poison event: it must arrive.
            await revoke_key(commands, org, first)
            head = await _head(pool)
            await _published_to(relay, head)
            assert relay.problem is None
        finally:
            await relay.stop()

        unpublishable = {poisoned[label] for label in UNPUBLISHABLE}
        assert await _quarantined(pool, stream) == {p.key_id: p.position for p in unpublishable}
        published = await _published(js, stream)
        skipped = {p.position for p in unpublishable}
        assert [e["position"] for e in published] == [
            p for p in range(1, head + 1) if p not in skipped
        ]
        assert (published[-1]["event_type"], published[-1]["key_id"]) == ("KeyRevoked", first)
        checkpoint = await pool.fetchval(
            "SELECT position FROM outbox_checkpoint WHERE stream = $1", stream
        )
        assert checkpoint == head

        # A new relay (a restart) goes on after the quarantine, and re-quarantines nothing.
        more = await _inject(pool, UNPUBLISHABLE["org id ending in a newline"])
        last = await generate_key(commands, org)
        successor = OutboxRelay(relay_settings, FAST)
        successor.start()
        try:
            await _published_to(successor, await _head(pool))
        finally:
            await successor.stop()
        quarantined = await _quarantined(pool, stream)
        assert quarantined == {p.key_id: p.position for p in unpublishable | {more}}
        tail = await _published(js, stream)
        assert [e["key_id"] for e in tail[len(published) :]] == [last]


async def test_nats_refusing_for_a_while_is_retried_never_quarantined(
    relay_settings: Settings, commands: KeyCommandHandler, pool: asyncpg.Pool
) -> None:
    stream = relay_settings.nats_stream
    config = StreamConfig(
        name=stream,
        subjects=[f"{relay_settings.nats_subject_prefix}.>"],
        storage=StorageType.FILE,
        duplicate_window=relay_settings.nats_duplicate_window_seconds,
        max_msgs=1,
        discard=DiscardPolicy.NEW,
    )
    async with jetstream(relay_settings.nats_url) as js, deleted_at_exit(js, stream):
        # A full stream refuses every publish with an API error: NATS's problem, not the
        # events'. Nothing may be quarantined and nothing lost.
        await js.add_stream(config)
        org = new_org()
        keys = [await generate_key(commands, org) for _ in range(2)]
        poison = await _inject(pool, UNPUBLISHABLE["org id with a dot"])
        keys.append(await generate_key(commands, org))
        relay = OutboxRelay(relay_settings, FAST)
        relay.start()
        try:

            async def refused() -> bool:
                return relay.published_position == 1 and relay.problem is not None

            await eventually(refused, what="the full stream to refuse the second event")
            assert "publish" in (relay.problem or "")
            assert await _quarantined(pool, stream) == {}
            config.max_msgs = -1
            await js.update_stream(config)
            await _published_to(relay, await _head(pool))
        finally:
            await relay.stop()
        published = await _published(js, stream)
        assert [e["key_id"] for e in published] == keys
        assert await _quarantined(pool, stream) == {poison.key_id: poison.position}
