"""Helpers for tests of the outbox relay and of subscribers: streams, events, waiting."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import nats
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from events.models import Actor
from events.servers import nats_servers
from service.clock import utc_now
from service.domain.commands import GenerateKey, RevokeKey
from service.domain.ids import new_key_id
from service.key_commands import KeyCommandHandler
from service.settings import Settings

TEST_ACTOR = Actor(id="test:outbox")


def unique_stream_settings(base: Settings, **overrides: object) -> Settings:
    """``base`` with a stream name and subject prefix no other test uses."""
    token = uuid.uuid4().hex[:10]
    return base.model_copy(
        update={"nats_stream": f"KLTEST_{token.upper()}", "nats_subject_prefix": f"kltest{token}"}
        | overrides
    )


async def generate_key(commands: KeyCommandHandler, org_id: str) -> str:
    """Record one ``KeyGenerated``; returns the key id."""
    key_id = new_key_id()
    await commands.handle(
        GenerateKey(
            key_id=key_id,
            org_id=org_id,
            name="Outbox test",
            type="secret",
            environment="live",
            issued_at=utc_now(),
            secret_hash=secrets.token_hex(32),
            hint="sk_live_0000…0000",
        ),
        org_id=org_id,
        actor=TEST_ACTOR,
    )
    return key_id


async def revoke_key(commands: KeyCommandHandler, org_id: str, key_id: str) -> None:
    """Record one ``KeyRevoked``."""
    await commands.handle(
        RevokeKey(key_id=key_id, reason="leaked", issued_at=utc_now()),
        org_id=org_id,
        actor=TEST_ACTOR,
    )


async def eventually(
    check: Callable[[], Awaitable[bool]], within: float = 20.0, what: str = "condition"
) -> None:
    """Wait until ``check()`` holds; fail the test after ``within`` seconds."""
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def stream_messages(js: JetStreamContext, stream: str) -> list[Msg]:
    """Every message stored in ``stream``, in stream order."""
    info = await js.stream_info(stream)
    return (
        [
            await js.get_msg(stream, seq)
            for seq in range(info.state.first_seq, info.state.last_seq + 1)
        ]
        if info.state.messages
        else []
    )


@contextlib.asynccontextmanager
async def jetstream(url: str, api_timeout: float = 5.0) -> AsyncIterator[JetStreamContext]:
    """A JetStream context on its own connection (``url`` may list servers), reconnecting.

    ``api_timeout`` bounds each JetStream API request (``stream_info`` and the like).
    """
    nc = await nats.connect(
        servers=nats_servers(url), max_reconnect_attempts=-1, reconnect_time_wait=0.2
    )
    try:
        yield nc.jetstream(timeout=api_timeout)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def deleted_at_exit(js: JetStreamContext, stream: str) -> AsyncIterator[None]:
    """Delete ``stream`` when the block ends (the shared NATS outlives the tests)."""
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            await js.delete_stream(stream)
