"""The subscriber side on a real NATS: the consumer helper, `events tail`, the example."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from nats.js import JetStreamContext

from events.codec import GENESIS_HASH, envelope_to_json, seal
from events.models import Actor, DomainEvent, Envelope, KeyEvent, KeyGenerated, KeyRevoked
from events.subjects import event_subject, subject_filter
from events.subscriber import EventConsumer
from service.embedded import free_port
from service.outbox.stream import ensure_stream
from service.settings import Settings
from tests.support.outbox import eventually, jetstream, unique_stream_settings

ROOT = Path(__file__).resolve().parents[2]


class Log:
    """Seals events into a hash chain and publishes them like the relay does."""

    def __init__(self, js: JetStreamContext, settings: Settings) -> None:
        self.js, self.settings = js, settings
        self.envelopes: list[Envelope] = []

    async def publish(self, event: DomainEvent) -> Envelope:
        envelope = seal(
            event,
            event_id=uuid.uuid4(),
            stream_version=1,
            position=len(self.envelopes) + 1,
            actor=Actor(id="test"),
            previous_hash=self.envelopes[-1].hash if self.envelopes else GENESIS_HASH,
        )
        await self.js.publish(
            event_subject(
                envelope.org_id,
                envelope.key_id,
                envelope.event_type,
                self.settings.nats_subject_prefix,
            ),
            envelope_to_json(envelope).encode(),
            headers={"Nats-Msg-Id": str(envelope.event_id)},
        )
        self.envelopes.append(envelope)
        return envelope

    async def generated(self, org: str = "acme") -> Envelope:
        return await self.publish(
            KeyGenerated(
                key_id=f"key_{uuid.uuid4().hex[:26].upper()}",
                org_id=org,
                occurred_at=datetime.now(UTC),
                name="k",
                type="secret",
                environment="live",
            )
        )

    async def revoked(self, org: str = "acme") -> Envelope:
        return await self.publish(
            KeyRevoked(
                key_id=f"key_{uuid.uuid4().hex[:26].upper()}",
                org_id=org,
                occurred_at=datetime.now(UTC),
                reason="leaked",
            )
        )


@pytest.fixture
def stream_settings(nats_url: str) -> Settings:
    return unique_stream_settings(Settings(nats_url=nats_url))


@pytest.fixture
async def js(stream_settings: Settings) -> AsyncIterator[JetStreamContext]:
    async with jetstream(stream_settings.nats_url) as context:
        await ensure_stream(context, stream_settings)
        yield context
        await context.delete_stream(stream_settings.nats_stream)


@pytest.fixture
def log(js: JetStreamContext, stream_settings: Settings) -> Log:
    return Log(js, stream_settings)


class Recorder:
    """A handler that records positions and can be told to fail once for a position."""

    def __init__(self, fail_once_at: int | None = None) -> None:
        self.positions: list[int] = []
        self.fail_once_at = fail_once_at

    async def __call__(self, envelope: Envelope, event: KeyEvent) -> None:
        assert envelope.event_type == event.event_type
        if envelope.position == self.fail_once_at:
            self.fail_once_at = None
            raise RuntimeError("handler failure, to be redelivered")
        self.positions.append(envelope.position)

    def has(self, count: int):  # type: ignore[no-untyped-def]
        async def check() -> bool:
            return len(self.positions) >= count

        return check


def consumer_for(
    js: JetStreamContext, settings: Settings, handler: Recorder, **options: object
) -> EventConsumer:
    return EventConsumer(
        js,
        durable=options.pop("durable", "test-consumer"),  # type: ignore[arg-type]
        handler=handler,
        stream=settings.nats_stream,
        filter_subject=options.pop(  # type: ignore[arg-type]
            "filter_subject", subject_filter(prefix=settings.nats_subject_prefix)
        ),
        fetch_wait_seconds=0.2,
        redeliver_delay_seconds=0.1,
        **options,  # type: ignore[arg-type]
    )


async def run_until(consumer: EventConsumer, recorder: Recorder, count: int) -> None:
    task = asyncio.create_task(consumer.run())
    try:
        await eventually(recorder.has(count), what=f"{count} handled events")
    finally:
        consumer.stop()
        await task


async def test_only_matching_events_reach_the_handler_and_are_acked(
    js: JetStreamContext, log: Log, stream_settings: Settings
) -> None:
    await log.generated()
    revoked_acme = await log.revoked("acme")
    await log.revoked("other")
    await log.generated()
    revoked_again = await log.revoked("acme")
    recorder = Recorder()
    consumer = consumer_for(
        js,
        stream_settings,
        recorder,
        filter_subject=subject_filter(
            org_id="acme", event_type="KeyRevoked", prefix=stream_settings.nats_subject_prefix
        ),
    )
    await run_until(consumer, recorder, 2)
    assert recorder.positions == [revoked_acme.position, revoked_again.position]
    info = await js.consumer_info(stream_settings.nats_stream, "test-consumer")
    assert info.num_ack_pending == 0 and info.num_pending == 0


async def test_a_failed_handler_gets_the_message_again_in_order(
    js: JetStreamContext, log: Log, stream_settings: Settings
) -> None:
    for _ in range(5):
        await log.generated()
    recorder = Recorder(fail_once_at=3)
    await run_until(consumer_for(js, stream_settings, recorder), recorder, 5)
    assert recorder.positions == [1, 2, 3, 4, 5]
    assert recorder.fail_once_at is None  # it did fail once


async def test_a_durable_consumer_resumes_after_what_it_acknowledged(
    js: JetStreamContext, log: Log, stream_settings: Settings
) -> None:
    for _ in range(3):
        await log.generated()
    first = Recorder()
    await run_until(consumer_for(js, stream_settings, first), first, 3)
    for _ in range(2):
        await log.generated()
    second = Recorder()
    await run_until(consumer_for(js, stream_settings, second), second, 2)
    assert first.positions == [1, 2, 3] and second.positions == [4, 5]


async def test_unknown_event_types_are_skipped_and_garbage_is_dropped(
    js: JetStreamContext, log: Log, stream_settings: Settings
) -> None:
    prefix = stream_settings.nats_subject_prefix
    await log.generated()
    future = json.loads(envelope_to_json(log.envelopes[0]))
    future.update(event_type="KeyTeleported", position=2, event_id=str(uuid.uuid4()))
    await js.publish(f"{prefix}.acme.key_x.KeyTeleported", json.dumps(future).encode())
    await js.publish(f"{prefix}.acme.key_x.KeyGenerated", b"not json at all")
    log.envelopes.extend([log.envelopes[0], log.envelopes[0]])  # keep positions aligned
    await log.revoked()
    recorder = Recorder()
    await run_until(consumer_for(js, stream_settings, recorder), recorder, 2)
    assert recorder.positions == [1, 4]
    info = await js.consumer_info(stream_settings.nats_stream, "test-consumer")
    assert info.num_ack_pending == 0 and info.num_pending == 0


def _with_a_dead_server(nats_url: str) -> str:
    """``nats_url`` as a cluster list whose first server is down: the client must move on."""
    return f"nats://127.0.0.1:{free_port()} , {nats_url}"


def _environment(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "KEYLEDGER_NATS_URL": _with_a_dead_server(str(settings.nats_url)),
        "KEYLEDGER_NATS_STREAM": settings.nats_stream,
        "KEYLEDGER_NATS_SUBJECT_PREFIX": settings.nats_subject_prefix,
    }


async def test_events_tail_prints_matching_envelopes_one_json_line_each(
    js: JetStreamContext, log: Log, stream_settings: Settings
) -> None:
    await log.generated()
    revoked = await log.revoked("acme")
    await log.revoked("other")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "service.cli.main", "events", "tail",
        "--type", "KeyRevoked", "--org", "acme", "--from-start", "--max", "2",
        env=_environment(stream_settings),
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    live = await log.revoked("acme")  # arrives while it follows (or replays: both are printed)
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    lines = stdout.decode().splitlines()
    assert lines == [envelope_to_json(revoked), envelope_to_json(live)]


async def test_the_revocation_listener_example_evicts_revoked_keys(
    js: JetStreamContext, log: Log, stream_settings: Settings
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "examples" / "revocation_listener.py"),
        "--nats", _with_a_dead_server(str(stream_settings.nats_url)),
        "--stream", stream_settings.nats_stream,
        "--prefix", stream_settings.nats_subject_prefix, "--durable", "example",
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await log.generated()
        revoked = await log.revoked()
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 30)
    finally:
        process.terminate()
        await process.wait()
    assert line.decode().startswith(f"evicted {revoked.key_id} (org acme, reason leaked")
    assert process.returncode == 0
