"""Commit → JetStream latency of the outbox relay at a steady command rate.

Drives real commands (GenerateKey, and RevokeKey for every other key) through
KeyCommandHandler at ``--rate`` per second for ``--seconds``, with an
``OutboxRelay`` running in the same process (as it does in ``keyledger serve``)
and a JetStream subscriber on the stream. For every event it measures the time
from the command's commit (the instant ``handle`` returns) to the moment the
subscriber receives the published message; JetStream delivers a message only
after storing it, i.e. after the point it sends the PubAck. A baseline in the
same run: a bare ``js.publish`` → PubAck round trip at the same rate.

    python -m bench.relay_latency [--rate 500] [--seconds 10] [--async-commit]

Uses ``KEYLEDGER_TEST_DATABASE_URL`` (default postgresql://postgres@127.0.0.1:5432/test)
in a scratch database, and ``KEYLEDGER_TEST_NATS_URL`` (default nats://127.0.0.1:4222)
with a stream of its own, deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg
import nats
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy

from bench.support import delete_stream, scratch_database
from events.models import Actor
from service.clock import utc_now
from service.domain.commands import Command, GenerateKey, RevokeKey
from service.domain.ids import new_key_id
from service.key_commands import KeyCommandHandler
from service.log_config import configure_logging
from service.outbox.relay import OutboxRelay
from service.outbox.stream import ensure_stream
from service.settings import Settings
from service.store.migrate import migrate

ACTOR = Actor(id="bench:relay-latency")


def percentile(samples: list[float], fraction: float) -> float:
    """The nearest-rank percentile of ``samples`` (in their own unit)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def summary(name: str, samples_ms: list[float]) -> str:
    return (
        f"| {name} | {len(samples_ms)} | {percentile(samples_ms, 0.5):.2f} |"
        f" {percentile(samples_ms, 0.99):.2f} | {max(samples_ms):.2f} |"
        f" {statistics.fmean(samples_ms):.2f} |"
    )


async def at_steady_rate(
    rate: float, seconds: float, action: Callable[[int], Coroutine[Any, Any, None]]
) -> float:
    """Start ``action(i)`` on a fixed schedule; returns the achieved rate per second."""
    count = int(rate * seconds)
    start = time.perf_counter()
    tasks: list[asyncio.Task[None]] = []
    for index in range(count):
        delay = start + index / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(action(index)))
    await asyncio.gather(*tasks)
    return count / (time.perf_counter() - start)


async def until(condition: Callable[[], bool], within: float) -> None:
    """Poll ``condition`` until it holds or ``within`` seconds pass."""
    deadline = time.perf_counter() + within
    while True:
        if condition() or time.perf_counter() > deadline:
            return
        await asyncio.sleep(0.05)


async def measure_relay(
    settings: Settings, rate: float, seconds: float, async_commit: bool
) -> tuple[list[float], float]:
    """Commit → subscriber receipt, in milliseconds, for every event written."""
    committed: dict[str, float] = {}
    received: dict[str, float] = {}

    async def on_message(msg: Msg) -> None:
        if msg.headers is not None:
            received[msg.headers["Nats-Msg-Id"]] = time.perf_counter()

    nc = await nats.connect(servers=settings.nats_servers)
    js = nc.jetstream()
    await ensure_stream(js, settings)
    await js.subscribe(
        f"{settings.nats_subject_prefix}.>",
        stream=settings.nats_stream,
        cb=on_message,
        ordered_consumer=True,
        deliver_policy=DeliverPolicy.NEW,
    )
    pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=8,
        max_size=8,
        # Optional: takes the disk's fsync out of the command path, which otherwise caps
        # appends (serialized under one lock held through commit) below the target rate.
        server_settings={"synchronous_commit": "off"} if async_commit else None,
    )
    commands = KeyCommandHandler(pool, max_active_keys=10**9)
    relay = OutboxRelay(settings)
    relay.start()
    # The handler commits whatever is waiting as one batch; bound what may wait so that a
    # stall shows up as lower achieved rate rather than unbounded queueing.
    in_flight = asyncio.Semaphore(64)
    pending_revokes: list[tuple[str, str]] = []

    async def one_command(index: int) -> None:
        async with in_flight:
            org = f"bench-{index % 50}"
            command: Command
            if index % 2 and pending_revokes:
                key_id, org = pending_revokes.pop()
                command = RevokeKey(key_id=key_id, reason="unused", issued_at=utc_now())
            else:
                key_id = new_key_id()
                command = GenerateKey(
                    key_id=key_id,
                    org_id=org,
                    name="bench",
                    type="secret",
                    environment="live",
                    issued_at=utc_now(),
                    secret_hash=secrets.token_hex(32),
                    hint="sk_live_bench…0000",
                )
            outcome = await commands.handle(command, org_id=org, actor=ACTOR)
            done = time.perf_counter()
            if isinstance(command, GenerateKey):
                pending_revokes.append((key_id, org))
            for envelope in outcome.events:
                committed[str(envelope.event_id)] = done

    try:
        await until(lambda: relay.is_leader, 30)
        achieved = await at_steady_rate(rate, seconds, one_command)
        await until(lambda: not set(committed) - set(received), 30)
    finally:
        await relay.stop()
        await pool.close()
        await nc.close()
    missing = set(committed) - set(received)
    if missing:
        raise RuntimeError(f"{len(missing)} events never reached the subscriber")
    return [(received[e] - committed[e]) * 1000 for e in committed], achieved


async def measure_bare_publish(settings: Settings, rate: float, seconds: float) -> list[float]:
    """A bare JetStream publish → PubAck round trip, in milliseconds."""
    nc = await nats.connect(servers=settings.nats_servers)
    js = nc.jetstream()
    samples: list[float] = []

    async def publish(index: int) -> None:
        began = time.perf_counter()
        await js.publish(
            f"{settings.nats_subject_prefix}.bench.key_baseline.Baseline",
            b"x" * 600,  # about the size of an envelope
            headers={"Nats-Msg-Id": f"baseline-{index}"},
        )
        samples.append((time.perf_counter() - began) * 1000)

    try:
        await at_steady_rate(rate, seconds, publish)
    finally:
        await nc.close()
    return samples


async def run(rate: float, seconds: float, async_commit: bool) -> str:
    server = os.environ.get(
        "KEYLEDGER_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test"
    )
    token = uuid.uuid4().hex[:10]
    nats_url = os.environ.get("KEYLEDGER_TEST_NATS_URL", "nats://127.0.0.1:4222")
    async with scratch_database(server, prefix="keyledger_bench") as url:
        settings = Settings(
            database_url=url,
            nats_url=nats_url,
            nats_stream=f"KLBENCH_{token.upper()}",
            nats_subject_prefix=f"klbench{token}",
        )
        try:
            conn = await asyncpg.connect(url)
            await migrate(conn)
            await conn.close()
            relay_ms, achieved = await measure_relay(settings, rate, seconds, async_commit)
            baseline_ms = await measure_bare_publish(settings, rate, min(seconds, 5))
        finally:
            await delete_stream(nats_url, settings.nats_stream)
    return "\n".join(
        [
            f"commands: {int(rate * seconds)} at a target of {rate:g}/s"
            f" (achieved {achieved:.0f}/s), {len(relay_ms)} events,"
            f" synchronous_commit={'off' if async_commit else 'on'}",
            "",
            "| path | samples | p50 ms | p99 ms | max ms | mean ms |",
            "|---|---|---|---|---|---|",
            summary("commit → JetStream subscriber (via outbox relay)", relay_ms),
            summary("baseline: bare js.publish → PubAck", baseline_ms),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="outbox relay commit → JetStream latency")
    parser.add_argument("--rate", type=float, default=500.0, help="commands per second")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument(
        "--async-commit",
        action="store_true",
        help="synchronous_commit=off for the command sessions (isolates the relay from fsync)",
    )
    args = parser.parse_args()
    configure_logging("warning")
    print(asyncio.run(run(args.rate, args.seconds, args.async_commit)))


if __name__ == "__main__":
    main()
