"""The relay's publisher: each message's future is what JetStream acknowledged for it.

Against the machine's (or an embedded) NATS, each test with a stream of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import StreamConfig
from nats.js.errors import APIError, NoStreamResponseError

from events.codec import GENESIS_HASH
from events.models import Actor, KeyRevoked
from events.servers import nats_servers
from service.outbox.acks import EXPECTED_STREAM_HEADER, AckedPublisher
from service.outbox.messages import publish_batch
from service.store.event_rows import seal_committed_after
from tests.support.outbox import deleted_at_exit, stream_messages

AT = datetime(2026, 5, 1, tzinfo=UTC)


@pytest.fixture
async def connection(nats_url: str) -> AsyncIterator[Client]:
    nc = await nats.connect(servers=nats_servers(nats_url))
    try:
        yield nc
    finally:
        await nc.close()


@pytest.fixture
async def stream(connection: Client) -> AsyncIterator[str]:
    """A stream of this test's own, on subjects ``acks.<name>.>``."""
    name = f"ACKS_{uuid.uuid4().hex[:10].upper()}"
    js = connection.jetstream()
    await js.add_stream(StreamConfig(name=name, subjects=[f"acks.{name}.>"], max_msg_size=2048))
    async with deleted_at_exit(js, name):
        yield name


def headers(stream: str, msg_id: str) -> dict[str, str]:
    return {"Nats-Msg-Id": msg_id, EXPECTED_STREAM_HEADER: stream}


async def test_stored_messages_settle_in_order_and_a_duplicate_is_not_stored_twice(
    connection: Client, stream: str
) -> None:
    publisher = AckedPublisher(connection)
    sent = [
        await publisher.send(f"acks.{stream}.k", f"m{n}".encode(), headers(stream, f"id-{n}"))
        for n in (0, 1, 2, 1)
    ]
    assert [await ack for ack in sent] == [None] * 4
    stored = await stream_messages(connection.jetstream(), stream)
    assert [m.data for m in stored] == [b"m0", b"m1", b"m2"]


async def test_what_jetstream_refuses_fails_that_message_alone(
    connection: Client, stream: str
) -> None:
    publisher = AckedPublisher(connection)
    wrong_stream = await publisher.send(
        f"acks.{stream}.k", b"x", headers("NOT_THIS_ONE", "id-wrong")
    )
    too_large = await publisher.send(f"acks.{stream}.k", b"x" * 4096, headers(stream, "id-big"))
    fine = await publisher.send(f"acks.{stream}.k", b"y", headers(stream, "id-fine"))
    with pytest.raises(APIError):
        await wrong_stream
    with pytest.raises(APIError) as refused:
        await too_large
    assert refused.value.err_code == 10054  # the relay quarantines on this one
    assert await fine is None


async def test_no_stream_on_the_subject_is_no_stream_response(
    connection: Client, stream: str
) -> None:
    publisher = AckedPublisher(connection)
    ack = await publisher.send(f"nobody.{stream}.k", b"x", headers(stream, "id-0"))
    with pytest.raises(NoStreamResponseError):
        await ack


async def test_an_acknowledgement_not_waited_for_any_more_is_dropped(
    connection: Client, stream: str
) -> None:
    # A plain subscriber takes the message and never answers: no acknowledgement comes.
    silent = await connection.subscribe(f"silent.{stream}")
    publisher = AckedPublisher(connection)
    ack = await publisher.send(f"silent.{stream}", b"x", headers(stream, "id-0"))
    message = await silent.next_msg(timeout=5)
    _, late = await asyncio.wait([ack], timeout=0.05)
    assert late == {ack}
    publisher.forget([ack])
    assert ack.cancelled()
    # An answer arriving after all finds nothing to settle.
    await connection.publish(message.reply, b"{}")
    await connection.flush()
    assert ack.cancelled()


async def test_a_message_nats_refuses_to_send_raises_and_is_not_waited_for(
    connection: Client, stream: str
) -> None:
    publisher = AckedPublisher(connection)
    too_large_for_nats = b"x" * (connection.max_payload + 1)
    with pytest.raises(nats.errors.MaxPayloadError):
        await publisher.send(f"acks.{stream}.k", too_large_for_nats, headers(stream, "id-0"))
    ack = await publisher.send(f"acks.{stream}.k", b"small", headers(stream, "id-1"))
    assert await ack is None


async def test_a_batch_nobody_acknowledges_settles_nothing_and_fails_as_nats(
    connection: Client, stream: str
) -> None:
    # Subscribed to by a plain subscriber, not a stream: the messages go out, no PubAck
    # comes back. That is NATS's failure (retried), never the events' (quarantined).
    prefix = f"silent.{stream}"
    silent = await connection.subscribe(f"{prefix}.>")
    event = KeyRevoked(key_id="key_x", org_id="acme", occurred_at=AT, reason="leaked")
    batch = seal_committed_after(
        [event], actor=Actor(id="a"), expected_version=1, position=0, previous_hash=GENESIS_HASH
    )
    published = await publish_batch(
        AckedPublisher(connection),
        batch,
        prefix=prefix,
        stream=stream,
        consumer="test",
        ack_timeout=0.05,
    )
    assert (published.settled, published.quarantined) == (0, [])
    assert isinstance(published.failure, nats.errors.TimeoutError)
    sent = await silent.next_msg(timeout=5)
    assert batch[0].encoded is not None and sent.data == batch[0].encoded.payload


@pytest.mark.parametrize("answer", [b"{}", b"not json", b"[1]", b'{"stream":"S"}'])
async def test_an_answer_that_is_not_a_puback_settles_nothing(
    connection: Client, stream: str, answer: bytes
) -> None:
    # A plain subscriber that answers in JetStream's place: the message was not stored.
    responder = await connection.subscribe(f"impostor.{stream}")
    publisher = AckedPublisher(connection)
    ack = await publisher.send(f"impostor.{stream}", b"x", headers(stream, "id-0"))
    message = await responder.next_msg(timeout=5)
    await connection.publish(message.reply, answer)
    with pytest.raises(APIError) as failed:
        await ack
    assert failed.value.err_code is None  # not "too large": NATS's failure, retried
