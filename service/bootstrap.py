"""The one composition root: every component of a replica, built and run in one order.

``build`` constructs the components and wires them (no I/O); ``running``
connects the database, builds, starts everything in the order below and,
on exit, stops it in reverse. HTTP (``service.http.app``), the CLI,
benchmarks and tests take what they need from the ``Keyledger`` it yields.

Start order, each step relying on the ones before it:

1. the database pool (migrations applied, pepper checked): everything uses it;
2. verification: the index is loaded from the log and followed (PostgreSQL
   NOTIFY, and JetStream when configured), commits are fed to it at once,
   and key uses are flushed periodically;
3. the truncation guard: the log head is compared with its witnesses, and
   commands are refused while it is truncated;
4. the outbox relay (only with NATS): publishes the log, never waiting for NATS;
5. the projections: read models follow the log;
6. the expiry sweeper: writes ``KeyExpired`` as keys pass ``expires_at``;
7. the snapshot writer: every ``KEYLEDGER_SNAPSHOT_INTERVAL_SECONDS``, one
   replica (whichever holds the lock) brings the registry snapshot that the
   next replica will start from up to the log head.
8. the webhook dispatcher (only with NATS): one replica delivers to every endpoint.

Stop order is the reverse, and keeps a clean SIGTERM lossless (``keyledger
serve`` lets in-flight requests finish before this starts): the snapshot
writer, the sweeper (no new events) → projections → outbox relay (publishes what the requests
committed, then drains NATS) → truncation guard → verification (flushes
``last_used_at``, closes its JetStream feed) → the database pool (last:
everything uses it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from projections.catalog import all_projections
from projections.runner import ProjectionRunner
from service.event_stream import EventFanout
from service.expiry import ExpirySweeper
from service.identities import Identities
from service.key_commands import KeyCommandHandler
from service.key_lifecycle import KeyLifecycle
from service.key_usage import UsageRecorder
from service.leaks import LeakReports
from service.outbox.relay import OutboxRelay
from service.queries import KeyQueries
from service.settings import Settings
from service.snapshot_writer import SnapshotWriter
from service.store.database import connect_database
from service.store.log_witnesses import Witness
from service.store.registry_snapshot import SnapshotStore
from service.truncation_guard import TruncationGuard
from service.usage_analytics import UsageCounts, UsageReader
from service.verification.callers import CallerAuthenticator
from service.verification.credits import CreditLedger
from service.verification.feed import TASK_PREFIX, IndexFeed
from service.verification.index import VerificationIndex
from service.verification.rate_limits import RateLimiter
from service.verification.shared_limits import SharedLimits
from service.verification.verifier import Verifier
from service.vitals_reading import VitalsReader
from service.webhooks.attempts import DeliveryAttempts
from service.webhooks.dispatcher import WebhookDispatcher
from service.webhooks.endpoints import WebhookEndpoints
from service.webhooks.registration import WebhookRegistrations

log = structlog.get_logger(__name__)
# How long a stopping background task, or the pool's connections, may take to let go
# before the stop moves on without them: a stop that waits for ever would keep a
# replica (or a test) from ever exiting, and whatever is left is cut when the process is.
STOP_GRACE_SECONDS = 10.0

__all__ = ["Keyledger", "build", "connect_database", "database", "running"]


@dataclass(frozen=True, slots=True)
class Keyledger:
    """Every component of one replica, as ``build`` wired them."""

    settings: Settings
    pool: asyncpg.Pool
    # The write side: the command handler and the use cases run through it.
    commands: KeyCommandHandler
    keys: KeyLifecycle
    identities: Identities
    # Verification: this replica's in-memory index, what feeds it, and what reads it.
    index: VerificationIndex
    feed: IndexFeed
    limiter: RateLimiter
    credits: CreditLedger
    # Shares the limiter's counts with the other replicas; None without NATS.
    shared_limits: SharedLimits | None
    usage: UsageRecorder
    verifier: Verifier
    callers: CallerAuthenticator
    guard: TruncationGuard
    # None without NATS.
    relay: OutboxRelay | None
    projections: ProjectionRunner
    sweeper: ExpirySweeper
    # None when KEYLEDGER_SNAPSHOT_INTERVAL_SECONDS is 0.
    snapshot_writer: SnapshotWriter | None
    # The read side.
    queries: KeyQueries
    vitals: VitalsReader
    # Webhooks: the endpoints, their delivery attempts, and (with NATS) the dispatcher.
    webhooks: WebhookEndpoints
    registrations: WebhookRegistrations
    deliveries: DeliveryAttempts
    dispatcher: WebhookDispatcher | None
    # Leak reports from secret scanners.
    leaks: LeakReports
    # Usage analytics (the counting is ``usage``'s).
    analytics: UsageReader
    # Live events for watchers (GET /v1/orgs/{org}/events/stream), fed by the index.
    fanout: EventFanout


def build(settings: Settings, pool: asyncpg.Pool) -> Keyledger:
    """Construct and wire every component on ``pool``; nothing is started."""
    assert settings.database_url is not None  # connect_database refuses to start without it
    pepper = settings.pepper_bytes
    commands = KeyCommandHandler(
        pool,
        max_active_keys=settings.max_active_keys_per_org,
        idempotency_ttl_hours=settings.idempotency_ttl_hours,
        lock_timeout_seconds=settings.append_lock_timeout_seconds,
        max_batch=settings.command_batch_max,
        max_waiting=settings.command_queue_limit,
    )
    index = VerificationIndex()
    fanout = EventFanout(settings.event_stream_buffer)
    # Every event the index applies, once and in order, whichever way it came.
    index.on_applied = fanout.publish
    feed = IndexFeed(
        index,
        pool,
        settings.database_url,
        nats_url=settings.nats_url,
        nats_stream=settings.nats_stream,
        nats_subject_prefix=settings.nats_subject_prefix,
        poll_interval=settings.verify_fallback_poll_seconds,
        snapshots=SnapshotStore(pepper) if settings.snapshot_load else None,
    )
    limiter = RateLimiter()
    credits = CreditLedger(pool, limiter.replicas)
    usage = UsageRecorder(
        pool,
        settings.usage_flush_interval_seconds,
        UsageCounts(enabled=settings.usage_analytics),
        settings.usage_retention_days,
    )

    def applied_by_the_index() -> list[Witness]:
        # The index applies only committed events (from PostgreSQL or JetStream).
        return [Witness("verification_index", index.position)] if index.position else []

    guard = TruncationGuard(
        pool,
        nats_url=settings.nats_url,
        nats_stream=settings.nats_stream,
        interval_seconds=settings.witness_check_interval_seconds,
        in_memory=applied_by_the_index,
    )
    relay = OutboxRelay(settings) if settings.nats_url else None
    projections = ProjectionRunner(
        pool,
        settings.database_url,
        all_projections(),
        batch_size=settings.projection_batch_size,
        fallback_poll_seconds=settings.projection_fallback_poll_seconds,
    )
    webhooks = WebhookEndpoints(pool, pepper)
    deliveries = DeliveryAttempts(pool)
    return Keyledger(
        settings=settings,
        pool=pool,
        commands=commands,
        keys=KeyLifecycle(commands, pepper),
        identities=Identities(commands),
        index=index,
        feed=feed,
        limiter=limiter,
        credits=credits,
        shared_limits=(
            SharedLimits(limiter, settings.nats_url, settings.limits_subject)
            if settings.nats_url
            else None
        ),
        usage=usage,
        verifier=Verifier(index, feed, pool, pepper, limiter, usage, credits),
        callers=CallerAuthenticator(pool, pepper, index=index, limiter=limiter),
        guard=guard,
        relay=relay,
        projections=projections,
        sweeper=ExpirySweeper(
            commands, settings.expiry_sweep_interval_seconds, settings.expiry_lead_times
        ),
        snapshot_writer=(
            SnapshotWriter(
                pool,
                pepper,
                interval_seconds=settings.snapshot_interval_seconds,
                keep=settings.snapshot_keep,
            )
            if settings.snapshot_interval_seconds > 0
            else None
        ),
        queries=KeyQueries(pool, projections, guard),
        vitals=VitalsReader(pool, index=index, projections=projections, guard=guard, relay=relay),
        webhooks=webhooks,
        registrations=WebhookRegistrations(commands, webhooks),
        deliveries=deliveries,
        dispatcher=WebhookDispatcher(settings, webhooks, deliveries) if settings.nats_url else None,
        leaks=LeakReports(pool, commands, pepper, settings.leak_action),
        analytics=UsageReader(pool),
        fanout=fanout,
    )


@contextlib.asynccontextmanager
async def database(settings: Settings, *, bounded: bool = True) -> AsyncIterator[asyncpg.Pool]:
    """The database pool alone (``connect_database``), closed on exit: for CLI tasks."""
    pool = await connect_database(settings, bounded=bounded)
    try:
        yield pool
    finally:
        try:
            await asyncio.wait_for(pool.close(), STOP_GRACE_SECONDS)
        except TimeoutError:
            # A connection still held (a task that did not stop): cut it, and say so.
            log.warning("database_pool_close_timed_out", seconds=STOP_GRACE_SECONDS)
            pool.terminate()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Keyledger]:
    """A started replica; stopped, in the documented order, on exit."""
    async with contextlib.AsyncExitStack() as stack:
        pool = await stack.enter_async_context(database(settings))
        service = build(settings, pool)
        await _start_verification(stack, service)
        await _start_guard(stack, service)
        if service.relay is not None:
            # Start never waits for NATS: commands are served while it is unreachable.
            service.relay.start()
            stack.push_async_callback(service.relay.stop)
            # What this replica commits, the relay (when it leads) publishes without
            # reading it back from the log.
            service.commands.committed.append(service.relay.hand_over)
        await service.projections.start()
        stack.push_async_callback(service.projections.stop)
        # What this replica commits, the projections apply without reading it back.
        service.commands.committed.append(service.projections.hand_over)
        _in_background(stack, service.sweeper.run(), "expiry-sweeper")
        if service.snapshot_writer is not None:
            _in_background(stack, service.snapshot_writer.run(), "registry-snapshots")
        if service.dispatcher is not None:
            # Stopped before the relay; a delivery cut short is redelivered by the next leader.
            _in_background(stack, service.dispatcher.run(), "webhook-dispatcher")
        yield service


async def _start_verification(stack: contextlib.AsyncExitStack, service: Keyledger) -> None:
    await service.feed.start()
    stack.push_async_callback(service.feed.stop)
    # Each commit reaches this replica's index before its command is answered.
    service.commands.committed.append(service.feed.apply_committed)
    _in_background(stack, service.usage.run(), f"{TASK_PREFIX}key-usage")
    # Stopped before the pool closes: it gives this replica's unspent credits back.
    _in_background(stack, service.credits.run(), f"{TASK_PREFIX}credits")
    if service.shared_limits is not None:
        service.shared_limits.start()
        stack.push_async_callback(service.shared_limits.stop)


async def _start_guard(stack: contextlib.AsyncExitStack, service: Keyledger) -> None:
    # A truncated log does not stop the start: the replica comes up not ready, refuses
    # verification and commands, and says why, so that an operator can look and repair.
    await service.guard.start()
    service.commands.write_guard = service.guard.require_intact
    service.commands.head_guard = service.guard.require_head_reaches

    async def stop() -> None:
        service.commands.write_guard = None
        service.commands.head_guard = None
        await service.guard.stop()

    stack.push_async_callback(stop)


def _in_background(
    stack: contextlib.AsyncExitStack, work: Coroutine[Any, Any, None], name: str
) -> None:
    """Run ``work`` as a task until the stack unwinds, then cancel it and wait for it."""
    task = asyncio.create_task(work, name=name)

    async def stop() -> None:
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
        if not done:
            log.warning("background_task_did_not_stop", task=name, seconds=STOP_GRACE_SECONDS)
            return
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)
