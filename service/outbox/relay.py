"""The outbox relay: every committed event, published to JetStream in position order.

The events table is the outbox, so a command commits without touching NATS
and keeps succeeding while NATS is down. The relay reads the log after its
checkpoint, publishes each event to ``{prefix}.{org}.{key}.{type}`` with
``Nats-Msg-Id: <event_id>``, and advances the checkpoint only once JetStream
has acknowledged (PubAck). A crash between PubAck and checkpoint republishes
a few events; JetStream's duplicate window drops them by message id.

An event that cannot be published (see ``service.outbox.messages``: a bad
subject, an envelope that does not decode or encode, too large) is
quarantined (``service.store.quarantine``) and the checkpoint moves past it,
so the events behind it, revocations included, still reach JetStream. NATS
being unreachable is never the event's fault: those events are retried
until NATS takes them.

While it leads, a ``LogFollower`` wakes it on ``NOTIFY keyledger_events``
(sent by every append) rather than polling; the poll is a safety net. Exactly
one replica relays at a time: the leader holds a session advisory lock on a
dedicated connection, and when that connection dies PostgreSQL releases the
lock and a waiting replica takes over within ``leader_retry_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
import nats
import nats.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from events.models import Envelope
from service.outbox.acks import AckedPublisher
from service.outbox.messages import publish_batch
from service.outbox.stream import StreamConfigMismatch, ensure_stream
from service.settings import Settings
from service.store.event_rows import Committed
from service.store.event_store import EventStore, UnreadableEvent
from service.store.handed_over import HandedOver
from service.store.log_follower import HAND_OVER_TURNS, LogFollower, RetryPolicy
from service.store.log_witnesses import jetstream_witness, read_witness_report
from service.store.outbox_checkpoint import outbox_lag, read_checkpoint, save_checkpoint
from service.store.quarantine import QuarantinedKey, QuarantineLog

# pg_try_advisory_lock(classid, objid): classid "kr" (keyledger relay), objid from the stream name.
RELAY_LOCK_CLASS = 0x6B72

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RelayTuning:
    """Timings and sizes of the relay; the defaults suit production."""

    batch_size: int = 500
    # Safety net only: commits wake the relay through NOTIFY.
    poll_interval_seconds: float = 5.0
    leader_retry_seconds: float = 1.0
    ack_timeout_seconds: float = 5.0
    min_backoff_seconds: float = 0.1
    max_backoff_seconds: float = 5.0
    stop_timeout_seconds: float = 10.0


def relay_consumer(stream: str) -> str:
    """The relay's name in ``quarantined_keys``: one relay per stream."""
    return f"outbox_relay:{stream}"


class OutboxRelay:
    """Publishes the event log to JetStream; one leader among all replicas."""

    def __init__(self, settings: Settings, tuning: RelayTuning | None = None) -> None:
        if not settings.database_url or not settings.nats_url:
            raise ValueError("the outbox relay needs both a database URL and a NATS URL")
        self.settings = settings
        self.tuning = tuning or RelayTuning()
        self.store = EventStore()
        self.quarantine = QuarantineLog()
        self.consumer = relay_consumer(settings.nats_stream)
        self.is_leader = False
        self.published_position = 0
        # Whether this leadership compared the stream's last event with the log (see
        # ``_stream_agrees``).
        self._stream_checked = False
        # The last reason the relay could not publish, for readiness checks; None when healthy.
        self.problem: str | None = None
        self._nc: NatsClient | None = None
        self._publisher: AckedPublisher | None = None  # on ``_nc``
        self._stream_ready = False
        self._stopping = False
        self._tasks: list[asyncio.Task[None]] = []
        self.retry = RetryPolicy(self.tuning.min_backoff_seconds, self.tuning.max_backoff_seconds)
        self._backoff = self.retry.backoff()
        # Listens only while leading; its wake-ups also carry stop, NATS and lock-loss news.
        self._log = LogFollower(
            settings.database_url,
            poll_seconds=self.tuning.poll_interval_seconds,
            retry=self.retry,
            name="outbox-relay",
        )
        self._wakeups = self._log.subscribe()
        # This replica's own commits, handed over as they commit (``hand_over``).
        self._handed = HandedOver(limit=2 * self.tuning.batch_size)

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start connecting and relaying in the background; never blocks on NATS."""
        self._tasks = [
            asyncio.create_task(self._connect_nats(), name="outbox-nats-connect"),
            asyncio.create_task(self._run(), name="outbox-relay"),
        ]

    async def stop(self) -> None:
        """Finish the batch in flight, release leadership, then drain NATS."""
        self._stopping = True
        self._log.wake()
        connect, run = self._tasks or (None, None)
        if connect is not None:
            connect.cancel()
        if run is not None:
            try:
                await asyncio.wait_for(asyncio.shield(run), self.tuning.stop_timeout_seconds)
            except TimeoutError:
                run.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await run
        if connect is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await connect
        if self._nc is not None and not self._nc.is_closed:
            with contextlib.suppress(Exception):
                if self._nc.is_connected:
                    await self._nc.drain()
                else:
                    await self._nc.close()

    async def hand_over(self, committed: Sequence[Committed]) -> None:
        """Take this replica's newly committed events (a commit observer), in order.

        Kept only while leading (see ``service.store.handed_over``).
        """
        self._handed.add(committed, leading=self.is_leader)

    def wake(self) -> None:
        """Look for new events now (commits also wake the relay through NOTIFY)."""
        self._log.wake()

    @property
    def nats_connected(self) -> bool:
        return self._nc is not None and self._nc.is_connected

    async def lag(self, db: asyncpg.Pool | asyncpg.Connection) -> int:
        """Events committed but not yet acknowledged by JetStream (head − checkpoint)."""
        return await outbox_lag(db, self.settings.nats_stream)

    # -- NATS ----------------------------------------------------------------

    async def _connect_nats(self) -> None:
        """Connect (retrying forever), then provision the stream."""

        async def disconnected() -> None:
            if not self._stopping:
                log.warning("nats_disconnected")

        async def reconnected() -> None:
            log.info("nats_reconnected")
            # The connection error recorded by error() is over. (On a replica that does
            # not lead, nothing else would ever clear it.) A leader's next failure, or a
            # stream mismatch, is recorded again at its next attempt.
            self.problem = None
            self._log.wake()

        async def error(exc: Exception) -> None:
            self.problem = f"nats: {exc!r}"
            log.debug("nats_error", error=repr(exc))

        # max_reconnect_attempts=-1 makes nats-py retry the first connection too,
        # every reconnect_time_wait, so the app starts and serves while NATS is down.
        self._nc = await nats.connect(
            servers=self.settings.nats_servers,
            name="keyledger-outbox-relay",
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=2,
            disconnected_cb=disconnected,
            reconnected_cb=reconnected,
            error_cb=error,
        )
        self._publisher = AckedPublisher(self._nc)
        log.info("nats_connected")
        backoff = self.retry.backoff()
        while not self._stream_ready:
            try:
                if await self._jetstream() is not None:
                    break
            except StreamConfigMismatch:
                pass  # already reported by _jetstream
            except Exception as exc:
                # E.g. more replicas asked for than the cluster has servers: say so.
                self.problem = f"stream {self.settings.nats_stream}: {exc!r}"
                log.warning("stream_provisioning_retry", error=repr(exc))
            await asyncio.sleep(backoff.next())
        self._log.wake()

    async def _jetstream(self) -> JetStreamContext | None:
        """JetStream with the stream provisioned, or None while NATS is unreachable."""
        if self._nc is None or not self._nc.is_connected:
            self.problem = "nats: not connected"
            return None
        js = self._nc.jetstream()
        if not self._stream_ready:
            try:
                await ensure_stream(js, self.settings)
            except StreamConfigMismatch as exc:
                self.problem = str(exc)
                log.error("jetstream_stream_mismatch", stream=exc.stream, error=str(exc))
                raise
            self._stream_ready = True
        return js

    # -- leadership and relaying ---------------------------------------------

    async def _run(self) -> None:
        while not self._stopping:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.problem = f"relay: {exc!r}"
                log.warning("outbox_relay_failed", error=repr(exc))
                await self._pause(self._backoff.next())

    async def _lead(self) -> None:
        """Wait for leadership on a dedicated connection, then relay until it is lost."""
        # Its commits (checkpoint, quarantines) do not wait for their WAL flush: one lost
        # in a database crash only republishes events JetStream drops as duplicates, and
        # the flushes would queue the command writer's own behind them.
        conn = await asyncpg.connect(
            self.settings.database_url, server_settings={"synchronous_commit": "off"}
        )
        try:
            # A killed lock connection must not leave us believing we lead.
            conn.add_termination_listener(lambda _: self._log.wake())
            while not await conn.fetchval(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                RELAY_LOCK_CLASS,
                self.settings.nats_stream,
            ):
                if self._stopping:
                    return
                await self._pause(self.tuning.leader_retry_seconds)
            self._log.start()
            self.published_position = await read_checkpoint(conn, self.settings.nats_stream)
            self._stream_checked = False
            self.is_leader = True
            log.info("outbox_relay_leader", stream=self.settings.nats_stream)
            while not self._stopping:
                caught_up = await self._relay_pending(conn)
                if conn.is_closed():
                    raise ConnectionError("the relay's lock connection was closed")
                if caught_up:
                    self._backoff.reset()
                    await self._pause(self.tuning.poll_interval_seconds)
                else:
                    await self._pause(self._backoff.next())
            if not conn.is_closed():
                # Stopping (SIGTERM): requests have finished, so publish what they committed
                # now rather than leave it to the next start (bounded by stop_timeout_seconds).
                await self._relay_pending(conn, draining=True)
        finally:
            self.is_leader = False
            await self._log.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    async def _relay_pending(self, conn: asyncpg.Connection, draining: bool = False) -> bool:
        """Publish batches until caught up (True) or NATS fails (False).

        A stop request ends the loop early, unless ``draining`` (the last pass on stop).
        """
        # Woken by notifications alone: once everything they named is published, a read
        # would find nothing (the poll, a reconnect or a retry reads until the log is done).
        notified = not draining and self._wakeups.positioned
        while draining or not self._stopping:
            try:
                js = await self._jetstream()
            except StreamConfigMismatch:
                return False
            except (nats.errors.Error, TimeoutError) as exc:
                # Typically a cluster electing the stream's new leader: keep the relay
                # leadership and retry after the backoff, rather than start over.
                self.problem = f"stream {self.settings.nats_stream}: {exc!r}"
                return False
            if js is None:
                return False
            if not self._stream_checked and not await self._stream_agrees(conn, js):
                return False
            if notified and self.published_position >= self._log.head:
                self.problem = None
                return True
            batch: Sequence[Committed | Envelope | UnreadableEvent] = await self._take_handed()
            batch = batch or await self.store.read_envelopes_after(
                conn, self.published_position, self.tuning.batch_size
            )
            if not batch:
                self.problem = None
                return True
            settled, quarantined = await self._publish(batch)
            if settled:
                await self._settle(conn, quarantined, batch[settled - 1].position)
                self.published_position = batch[settled - 1].position
            if settled < len(batch):
                return False
        return True

    async def _settle(
        self, conn: asyncpg.Connection, quarantined: list[QuarantinedKey], position: int
    ) -> None:
        """Move the checkpoint to ``position``, with the quarantines met on the way."""
        if not quarantined:
            # One statement needs no transaction of its own (BEGIN and COMMIT: two round
            # trips per batch); this is every batch but one that meets a poison event.
            await save_checkpoint(conn, self.settings.nats_stream, position)
            return
        async with conn.transaction():
            await self.quarantine.record(conn, quarantined)
            await save_checkpoint(conn, self.settings.nats_stream, position)

    async def _take_handed(self) -> list[Committed]:
        """The handed-over events that continue the checkpoint. With none yet while events
        were notified past it, a few loop turns are waited first: the notification of this
        replica's commit can come before the commit's observers hand its events over, and
        reading them back from the log costs more."""
        for _ in range(HAND_OVER_TURNS):
            taken = self._handed.take(after=self.published_position, limit=self.tuning.batch_size)
            if taken or self.published_position >= self._log.head:
                return taken
            await asyncio.sleep(0)
        return self._handed.take(after=self.published_position, limit=self.tuning.batch_size)

    async def _stream_agrees(self, conn: asyncpg.Connection, js: JetStreamContext) -> bool:
        """Whether the log holds the event the stream published last (once per leadership).

        After a restored backup the checkpoint goes back with the log, and an
        event written since may have taken the position of one that is already
        on the stream. Publishing it would overwrite the stream's witness of
        the lost tail (and hand subscribers two different events at one
        position), so the relay holds back until the log is repaired. When
        they agree, positions the stream already holds are not sent again.
        """
        try:
            witness = await jetstream_witness(js, self.settings.nats_stream)
        except (nats.errors.Error, TimeoutError) as exc:
            # The stream's leader may be changing: retry after the backoff.
            self.problem = f"stream {self.settings.nats_stream}: {exc!r}"
            return False
        if witness is not None and witness.hash is not None:
            # The same comparison as the truncation guard's, on this one witness.
            report = await read_witness_report(conn, [witness])
            if witness in report.missing:
                self.problem = (
                    f"the stream holds another event at position {witness.position} than the"
                    " log; not publishing until the log is repaired (keyledger audit verify)"
                )
                log.critical("outbox_relay_log_disagrees", position=witness.position)
                return False
            if witness.position > self.published_position:
                await save_checkpoint(conn, self.settings.nats_stream, witness.position)
                self.published_position = witness.position
        self._stream_checked = True
        return True

    async def _publish(
        self, batch: Sequence[Committed | Envelope | UnreadableEvent]
    ) -> tuple[int, list[QuarantinedKey]]:
        """Publish a batch (``publish_batch``): how many leading events are settled, and
        the quarantines among them."""
        assert self._publisher is not None, "publishing before connecting"  # _jetstream checks
        published = await publish_batch(
            self._publisher,
            batch,
            prefix=self.settings.nats_subject_prefix,
            stream=self.settings.nats_stream,
            consumer=self.consumer,
            ack_timeout=self.tuning.ack_timeout_seconds,
        )
        if published.failure is not None:
            self.problem = f"publish: {published.failure!r}"
            # The stream may have vanished (a wiped NATS store): provision it again.
            self._stream_ready = False
            log.warning(
                "outbox_publish_failed",
                position=batch[published.settled].position,
                error=repr(published.failure),
            )
        return published.settled, published.quarantined

    async def _pause(self, seconds: float) -> None:
        """Sleep up to ``seconds``; a commit, a reconnect or ``stop`` ends it early."""
        await self._wakeups.wait(seconds)
