"""The outbox relay against real PostgreSQL and NATS.

What it guarantees: docs/events.md#ordering-and-delivery-guarantees.

Each test has a database of its own (so the log starts empty) and a stream
and subject prefix of its own (the NATS server may be shared).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from nats.aio.msg import Msg

from bench.support import scratch_database
from events.codec import envelope_from_json, envelope_to_json
from events.subjects import event_subject
from events.subscriber import EventConsumer
from service.embedded import EmbeddedNats, free_port
from service.http.app import create_app
from service.http.context import KEYLEDGER
from service.key_commands import KeyCommandHandler
from service.outbox.relay import RELAY_LOCK_CLASS, OutboxRelay, RelayTuning
from service.outbox.stream import StreamConfigMismatch, ensure_stream
from service.service_keys import issue_service_key
from service.settings import Settings
from service.store.event_store import EventStore
from service.store.migrate import migrate
from tests.support.api import Api, indexed, new_org
from tests.support.outbox import (
    TEST_ACTOR,
    deleted_at_exit,
    eventually,
    generate_key,
    jetstream,
    revoke_key,
    stream_messages,
    unique_stream_settings,
)

FAST = RelayTuning(leader_retry_seconds=0.2, ack_timeout_seconds=1.0, max_backoff_seconds=0.5)


@pytest.fixture
async def own_database(postgres_server_url: str) -> AsyncIterator[str]:
    async with scratch_database(postgres_server_url) as url:
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
        Settings(database_url=own_database, nats_url=nats_url, pepper="unused-" + "p" * 40)
    )


async def record_events(commands: KeyCommandHandler, org: str, keys: int) -> None:
    """``keys`` KeyGenerated, every other key then revoked."""
    for index in range(keys):
        key_id = await generate_key(commands, org)
        if index % 2:
            await revoke_key(commands, org, key_id)


async def caught_up(relay: OutboxRelay, pool: asyncpg.Pool) -> None:
    async def lag_is_zero() -> bool:
        return await relay.lag(pool) == 0

    await eventually(lag_is_zero, what="the relay to catch up")


async def test_every_event_is_published_in_position_order_with_its_msg_id(
    relay_settings: Settings, commands: KeyCommandHandler, pool: asyncpg.Pool
) -> None:
    async with (
        jetstream(relay_settings.nats_url) as js,
        deleted_at_exit(js, relay_settings.nats_stream),
    ):
        org = new_org()
        await record_events(commands, org, 4)  # committed before the relay starts
        relay = OutboxRelay(relay_settings, FAST)
        relay.start()
        try:
            await record_events(commands, org, 6)  # committed while it runs
            await caught_up(relay, pool)
        finally:
            await relay.stop()

        async with pool.acquire() as conn:
            log = await EventStore().read_after(conn, 0)
        messages = await stream_messages(js, relay_settings.nats_stream)
        assert len(log) == 15
        assert [m.subject for m in messages] == [
            event_subject(e.org_id, e.key_id, e.event_type, relay_settings.nats_subject_prefix)
            for e in log
        ]
        assert [m.headers["Nats-Msg-Id"] for m in messages] == [str(e.event_id) for e in log]
        assert [m.data.decode() for m in messages] == [envelope_to_json(e) for e in log]
        checkpoint = await pool.fetchval(
            "SELECT position FROM outbox_checkpoint WHERE stream = $1", relay_settings.nats_stream
        )
        assert checkpoint == log[-1].position


async def test_a_restarted_relay_resumes_from_its_checkpoint(
    relay_settings: Settings, commands: KeyCommandHandler, pool: asyncpg.Pool
) -> None:
    async with (
        jetstream(relay_settings.nats_url) as js,
        deleted_at_exit(js, relay_settings.nats_stream),
    ):
        org = new_org()
        for batch in range(2):
            await record_events(commands, org, 3)
            relay = OutboxRelay(relay_settings, FAST)
            relay.start()
            try:
                await caught_up(relay, pool)
            finally:
                await relay.stop()
            info = await js.stream_info(relay_settings.nats_stream)
            # Only new events were published: no message was ever sent twice.
            assert info.state.messages == info.state.last_seq == 4 * (batch + 1)


async def test_a_lost_stream_is_republished_whole_once_the_checkpoint_is_cleared(
    relay_settings: Settings, commands: KeyCommandHandler, pool: asyncpg.Pool
) -> None:
    """The README's recovery: replicas stopped, stream lost, checkpoint deleted, restart."""
    stream = relay_settings.nats_stream
    async with jetstream(relay_settings.nats_url) as js, deleted_at_exit(js, stream):
        await record_events(commands, new_org(), 3)
        for lost in (False, True):
            if lost:
                await js.delete_stream(stream)
                await pool.execute("DELETE FROM outbox_checkpoint WHERE stream = $1", stream)
            relay = OutboxRelay(relay_settings, FAST)
            relay.start()
            try:
                await caught_up(relay, pool)
            finally:
                await relay.stop()
        async with pool.acquire() as conn:
            log = await EventStore().read_after(conn, 0)
        messages = await stream_messages(js, stream)
        assert [m.headers["Nats-Msg-Id"] for m in messages] == [str(e.event_id) for e in log]
        assert [m.data.decode() for m in messages] == [envelope_to_json(e) for e in log]


async def lock_holders(pool: asyncpg.Pool) -> list[int]:
    """Backend pids holding a relay lock (in this test's database)."""
    rows = await pool.fetch(
        """SELECT pid FROM pg_locks
           WHERE locktype = 'advisory' AND classid = $1 AND granted
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())""",
        RELAY_LOCK_CLASS,
    )
    return [r["pid"] for r in rows]


async def test_when_the_leader_stops_the_other_relay_takes_over(
    relay_settings: Settings, commands: KeyCommandHandler, pool: asyncpg.Pool
) -> None:
    async with (
        jetstream(relay_settings.nats_url) as js,
        deleted_at_exit(js, relay_settings.nats_stream),
    ):
        org = new_org()
        first, second = OutboxRelay(relay_settings, FAST), OutboxRelay(relay_settings, FAST)
        first.start()
        try:
            await eventually(lambda: _true_when(first.is_leader), what="a first leader")
            second.start()
            await record_events(commands, org, 4)
            await caught_up(first, pool)
            assert not second.is_leader and len(await lock_holders(pool)) == 1

            await first.stop()
            await eventually(lambda: _true_when(second.is_leader), what="the takeover")
            await record_events(commands, org, 4)
            await caught_up(second, pool)
        finally:
            await first.stop()
            await second.stop()

        messages = await stream_messages(js, relay_settings.nats_stream)
        assert [_position(m) for m in messages] == list(range(1, 13))


async def test_when_the_leaders_lock_connection_dies_relaying_goes_on_exactly_once(
    relay_settings: Settings, commands: KeyCommandHandler, pool: asyncpg.Pool
) -> None:
    async with (
        jetstream(relay_settings.nats_url) as js,
        deleted_at_exit(js, relay_settings.nats_stream),
    ):
        org = new_org()
        relays = [OutboxRelay(relay_settings, FAST), OutboxRelay(relay_settings, FAST)]
        for relay in relays:
            relay.start()
        try:
            await record_events(commands, org, 4)
            await caught_up(relays[0], pool)
            (leader_pid,) = await lock_holders(pool)
            # What a crashed replica looks like to PostgreSQL: its session ends.
            await pool.execute("SELECT pg_terminate_backend($1)", leader_pid)
            await record_events(commands, org, 4)

            async def new_leader() -> bool:
                holders = await lock_holders(pool)
                return len(holders) == 1 and holders != [leader_pid]

            await eventually(new_leader, what="a new lock holder")
            await caught_up(relays[0], pool)
        finally:
            for relay in relays:
                await relay.stop()

        messages = await stream_messages(js, relay_settings.nats_stream)
        assert [_position(m) for m in messages] == list(range(1, 13))


async def test_nats_outage_loses_nothing_and_duplicates_nothing(
    relay_settings: Settings,
    commands: KeyCommandHandler,
    pool: asyncpg.Pool,
    tmp_path: Path,
) -> None:
    # Our own nats-server, down when the relay starts, so the app's start path is covered too.
    server = EmbeddedNats(tmp_path / "nats", port=free_port())
    settings = relay_settings.model_copy(update={"nats_url": server.url})
    org = new_org()
    relay = OutboxRelay(settings, FAST)
    relay.start()
    received: list[int] = []

    async def handler(envelope, _event) -> None:  # type: ignore[no-untyped-def]
        received.append(envelope.position)

    def received_all(count: int):  # type: ignore[no-untyped-def]
        return lambda: _true_when(len(received) >= count)

    try:
        await record_events(commands, org, 2)  # NATS not even started: commands still succeed
        assert await relay.lag(pool) == 3
        server.start()
        async with jetstream(server.url) as js:
            consumer = EventConsumer(
                js,
                durable="outage-test",
                handler=handler,
                stream=settings.nats_stream,
                filter_subject=f"{settings.nats_subject_prefix}.>",
            )
            await caught_up(relay, pool)
            consuming = asyncio.create_task(consumer.run())
            await eventually(received_all(3), what="the first events")

            await asyncio.to_thread(server.stop)
            await record_events(commands, org, 4)  # 6 events while NATS is down
            assert await relay.lag(pool) == 6
            await asyncio.to_thread(server.start)  # same port, same store

            await caught_up(relay, pool)
            await eventually(received_all(9), what="every event after the outage")
            await asyncio.sleep(0.5)  # room for a duplicate to show up, if there were one
            consumer.stop()
            await consuming
            info = await js.stream_info(settings.nats_stream)
    finally:
        await relay.stop()
        server.stop()

    assert received == list(range(1, 10))
    assert info.state.messages == 9


async def _true_when(condition: bool) -> bool:
    return condition


def _position(message: Msg) -> int:
    return envelope_from_json(message.data).position


async def test_the_app_serves_commands_while_nats_is_down_and_publishes_when_it_returns(
    relay_settings: Settings, pool: asyncpg.Pool, tmp_path: Path
) -> None:
    server = EmbeddedNats(tmp_path / "nats", port=free_port())
    settings = relay_settings.model_copy(update={"nats_url": server.url})
    async with TestClient(TestServer(create_app(settings))) as client:
        relay = client.app[KEYLEDGER].relay
        admin = await issue_service_key(
            pool, settings.pepper_bytes, name="admin", scopes=["admin"], actor=TEST_ACTOR
        )
        await indexed(client, admin.position)
        await Api(client, admin.secret).generate(new_org())
        assert await relay.lag(pool) == 2  # the service key and the generated key
        try:
            await asyncio.to_thread(server.start)
            await caught_up(relay, pool)
            async with jetstream(server.url) as js:
                messages = await stream_messages(js, settings.nats_stream)
        finally:
            await client.close()  # the relay stops before its NATS server does
            server.stop()
    assert [_position(m) for m in messages] == [1, 2]


async def test_a_stream_with_another_configuration_is_reported_not_recreated(
    relay_settings: Settings,
) -> None:
    async with (
        jetstream(relay_settings.nats_url) as js,
        deleted_at_exit(js, relay_settings.nats_stream),
    ):
        await js.add_stream(
            name=relay_settings.nats_stream,
            subjects=[f"{relay_settings.nats_subject_prefix}.>"],
            duplicate_window=30,
        )
        await js.publish(f"{relay_settings.nats_subject_prefix}.keep.me", b"precious")
        with pytest.raises(StreamConfigMismatch, match="duplicate_window: expected 120"):
            await ensure_stream(js, relay_settings)
        info = await js.stream_info(relay_settings.nats_stream)
        assert info.state.messages == 1 and info.config.duplicate_window == 30


async def test_a_stream_with_fewer_replicas_than_configured_is_reported_not_recreated(
    relay_settings: Settings,
) -> None:
    # One server is enough to show it: the stream is found, never re-created with 3 copies.
    settings = relay_settings.model_copy(update={"nats_stream_replicas": 3})
    async with (
        jetstream(settings.nats_url) as js,
        deleted_at_exit(js, settings.nats_stream),
    ):
        await js.add_stream(
            name=settings.nats_stream,
            subjects=[f"{settings.nats_subject_prefix}.>"],
            duplicate_window=settings.nats_duplicate_window_seconds,
        )
        await js.publish(f"{settings.nats_subject_prefix}.keep.me", b"precious")
        with pytest.raises(StreamConfigMismatch, match="num_replicas: expected 3, found 1"):
            await ensure_stream(js, settings)

        relay = OutboxRelay(settings, FAST)
        relay.start()
        try:

            async def reported() -> bool:
                return "num_replicas: expected 3, found 1" in (relay.problem or "")

            await eventually(reported, what="the relay to report the replica count")
        finally:
            await relay.stop()
        info = await js.stream_info(settings.nats_stream)
        assert info.state.messages == 1 and (info.config.num_replicas or 1) == 1


async def test_the_relay_reaches_nats_through_a_server_list(
    relay_settings: Settings, commands: KeyCommandHandler, pool: asyncpg.Pool, nats_url: str
) -> None:
    # Nothing listens on the first two entries: nats-py must move on to the live one.
    listed = f" nats://127.0.0.1:{free_port()} ,127.0.0.1:{free_port()}, {nats_url} "
    settings = Settings(
        database_url=relay_settings.database_url,
        nats_url=listed,
        nats_stream=relay_settings.nats_stream,
        nats_subject_prefix=relay_settings.nats_subject_prefix,
        pepper="unused",
    )
    assert len(settings.nats_servers) == 3
    async with (
        jetstream(settings.nats_url) as js,
        deleted_at_exit(js, settings.nats_stream),
    ):
        await record_events(commands, new_org(), 2)
        relay = OutboxRelay(settings, FAST)
        relay.start()
        try:
            await caught_up(relay, pool)
        finally:
            await relay.stop()
        messages = await stream_messages(js, settings.nats_stream)
    assert [_position(m) for m in messages] == [1, 2, 3]
