"""Keeping a replica's ``VerificationIndex`` current.

Start: fold the whole log into the index (positions 1…head). Then two feeds
offer envelopes to it, and the index applies each position exactly once, in
order:

- JetStream (fast path, when NATS is configured): an ordered, ephemeral
  consumer on the event stream delivering new messages. JetStream sequence
  numbers are not log positions, so each message is placed by its envelope's
  ``position``. A message more than one past the applied position means a
  gap: PostgreSQL fills it.
- PostgreSQL (source of truth and fallback): a ``LogFollower`` (``LISTEN
  keyledger_events`` with reconnects, and a slow poll for a lost
  notification) wakes a catch-up that reads ``EventStore.read_after(applied)``.

Lag (``VerificationIndex.lag``) is the highest position this replica has
heard of (notifications, JetStream, reads) minus the applied position.

A row or message that cannot be applied never stops the feed: the index sets
its key aside (see ``VerificationIndex.set_aside``) and the feed records that
quarantine in PostgreSQL, where ``/readyz``, ``/metrics`` and the key's view
show it. A message that does not even decode is skipped; the PostgreSQL
catch-up then meets the same position as an unreadable row.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import asyncpg
import structlog

from events.codec import envelope_from_json
from events.models import Envelope
from events.servers import nats_servers
from service.store.event_rows import Committed, missing_position
from service.store.event_store import EventStore, UnreadableEvent
from service.store.held_connection import HeldConnection
from service.store.identity_log import configured_identities
from service.store.log_follower import LogFollower, RetryPolicy
from service.store.quarantine import INDEX_CONSUMER, QuarantineLog, describe_failure
from service.store.registry_snapshot import SnapshotStore
from service.store.snapshot_chunks import Chunk
from service.verification.index import Offer, VerificationIndex

if TYPE_CHECKING:
    from nats.aio.msg import Msg

log = structlog.get_logger(__name__)
TASK_PREFIX = "keyledger-background:"


_POSITION = b',"position":'


def published_position(envelope_json: bytes | str) -> int | None:
    """The ``position`` of a published envelope without decoding it, None when unsure.

    The relay publishes canonical JSON: keys sorted, so the top-level position is
    the last ``"position":`` in the text (``data`` and ``actor`` come before it,
    only ``schema_version`` and ``stream_version`` after). A message not of that
    shape gives None (decode it); at worst a wrong answer skips a message, and
    the next one's gap then brings the position in from PostgreSQL.
    """
    raw = envelope_json.encode() if isinstance(envelope_json, str) else envelope_json
    at = raw.rfind(_POSITION)
    if at < 0:
        return None
    start = at + len(_POSITION)
    end = raw.find(b",", start)
    digits = raw[start:end] if end > 0 else b""
    return int(digits) if digits.isdigit() and len(digits) <= 19 else None


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while a snapshot is loaded.

    A load makes a million objects, none of them garbage: each collection the
    allocations trigger walks them all again, a third of the load's time."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class IndexFeed:
    """Loads ``index`` from the log and follows new events until stopped."""

    def __init__(
        self,
        index: VerificationIndex,
        pool: asyncpg.Pool,
        database_url: str,
        *,
        nats_url: str | None = None,
        nats_stream: str = "KEYLEDGER",
        nats_subject_prefix: str = "keyledger.events",
        poll_interval: float = 2.0,
        snapshots: SnapshotStore | None = None,
    ) -> None:
        self.index = index
        # Where a cold start begins, when a snapshot checks out (None: always the whole log).
        self.snapshots = snapshots
        self.pool = pool
        self.database_url = database_url
        self.nats_url = nats_url
        self.nats_stream = nats_stream
        self.nats_subject_prefix = nats_subject_prefix
        self.poll_interval = poll_interval
        self.store = EventStore()
        self.quarantine = QuarantineLog()
        self.loaded_position = 0
        self.jetstream_connected = False
        self.last_applied_at = time.monotonic()
        self.retry = RetryPolicy()
        self._log = LogFollower(
            database_url, poll_seconds=poll_interval, retry=self.retry, name="verification-index"
        )
        self._advanced = asyncio.Event()
        self._catching_up = asyncio.Lock()
        # Held between catch-ups while they keep coming (with several replicas, one per
        # commit of another replica): giving it back each time costs the pool's reset.
        self._conn = HeldConnection(pool)
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self, *, follow_postgres: bool = True) -> None:
        """Load the log into the index, then follow it in the background.

        The load starts from the newest snapshot that checks out, if any, and
        folds the log after it; else it folds the whole log. Either way the
        index has reached the log head as read here before this returns
        (``index.loaded``, which ``/readyz`` waits for).

        ``follow_postgres=False`` leaves JetStream as the only live feed (tests
        use it to show that the fast path works on its own).
        """
        started = time.monotonic()
        snapshot_position = await self.load_snapshot() if self.snapshots is not None else None
        await self.catch_up()
        self.loaded_position = self.index.position
        self.index.loaded = True
        log.info(
            "verification_index_loaded",
            position=self.loaded_position,
            keys=len(self.index),
            snapshot_position=snapshot_position,
            seconds=round(time.monotonic() - started, 3),
        )
        if follow_postgres:
            self._log.start()
            self._tasks.append(
                asyncio.create_task(self._follow_postgres(), name=f"{TASK_PREFIX}index-postgres")
            )
        if self.nats_url:
            self._tasks.append(
                asyncio.create_task(self._follow_jetstream(), name=f"{TASK_PREFIX}index-jetstream")
            )
        self.index.following = bool(self._tasks)

    async def load_snapshot(self) -> int | None:
        """Fill the empty index from the newest snapshot that checks out; its position.

        A snapshot that does not check out (another log, pepper or version, altered,
        damaged) is skipped with a warning, and the next older one is tried; with
        none left the index stays empty and ``catch_up`` folds the whole log.
        """
        assert self.snapshots is not None
        index = self.index

        async def take(chunk: Chunk) -> None:
            index.load_chunk(chunk)

        async def reset() -> None:
            index.clear()

        async with self.pool.acquire() as conn:
            with collector_paused():
                header = await self.snapshots.load_newest(conn, take, reset)
        if header is None:
            return None
        async with self.pool.acquire() as conn:
            # The snapshot holds keys only: identities as they stood at its position.
            index.load_identities(await configured_identities(conn, header.position))
        index.start_at(header.position, header.quarantines(INDEX_CONSUMER))
        return header.position

    async def stop(self) -> None:
        """Stop following."""
        self.index.following = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        await self._log.stop()
        # Under the lock: a commit observer may still be catching up on the connection.
        async with self._catching_up:
            await self._conn.release()

    async def catch_up(self) -> int:
        """Apply every committed event after the applied position; returns how many."""
        applied = 0
        async with self._catching_up:
            while True:
                conn = await self._conn.acquire()
                try:
                    await self._save_quarantines(conn)
                    after = self.index.position
                    page = await self.store.read_envelopes_after(conn, after, 1000)
                    self._note_gap(page, after)
                    for item in page:
                        if isinstance(item, UnreadableEvent):
                            outcome = self.index.offer_unreadable(item)
                        else:
                            outcome = self.index.offer(item)
                        if outcome is Offer.APPLIED or outcome is Offer.SET_ASIDE:
                            applied += 1
                    await self._save_quarantines(conn)
                except BaseException:
                    await self._conn.release()  # it may be broken: the next takes another
                    raise
                self._conn.done()
                if page:
                    self._heard(page[-1].position)
                    self._notify_advanced()
                if len(page) < 1000:
                    return applied

    def _note_gap(self, page: Sequence[Envelope | UnreadableEvent], after: int) -> None:
        """Remember a hole in the log itself (not a message JetStream has not sent yet).

        Until that is repaired nothing past it applies here, and verification
        refuses to answer rather than miss a revocation that lies behind the hole.
        """
        # Read as of ``after``: the index may have moved on meanwhile.
        missing = missing_position(after, page)
        if missing is not None:
            if self.index.gap_at != missing:
                log.critical(
                    "log_gap",
                    missing=missing,
                    remedy="restore the missing events (keyledger audit verify names them)",
                )
            self.index.gap_at = missing
        else:
            self.index.gap_at = None

    async def _save_quarantines(self, conn: asyncpg.Connection) -> None:
        """Persist the keys the index has set aside since the last save (all replicas agree)."""
        unsaved = self.index.unsaved_quarantines
        if unsaved:
            saving = list(unsaved)  # JetStream may add more while this awaits
            await self.quarantine.record(conn, saving)
            del unsaved[: len(saving)]

    async def wait_for(self, position: int, within: float) -> bool:
        """Wait until the index has applied ``position`` (True) or ``within`` seconds pass."""
        deadline = time.monotonic() + within
        while self.index.position < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._log.wake()  # nudge a catch-up rather than wait for the poll
            advanced = self._advanced
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(advanced.wait(), remaining)
        return True

    async def apply_committed(self, committed: Sequence[Committed]) -> None:
        """Apply events this replica has just committed, before their command answers.

        In order after the applied position they apply at once (as their writer
        decoded them); otherwise the index first catches up from PostgreSQL, so
        a key revoked through this replica is refused here as soon as the revoke
        returns."""
        for item in committed:
            self._heard(item.position)
            if self.index.offer(item.envelope, item.event) is Offer.GAP:
                await self.catch_up()
                break
        self._notify_advanced()

    def offer(self, envelope_json: bytes | str) -> None:
        """Offer one published envelope (JetStream); a gap wakes the PostgreSQL catch-up.

        A message that does not decode is left to the catch-up, which reads
        its row from PostgreSQL and quarantines its key if it is unreadable
        there too."""
        # This replica's own events are in the index already (applied at commit, before
        # their callers heard back): most messages are stale, and decoding them would cost
        # more than everything else the feed does. Their position is read from the text.
        stale = published_position(envelope_json)
        if stale is not None and stale <= self.index.position:
            self._heard(stale)
            return
        try:
            envelope = envelope_from_json(envelope_json)
        except Exception as exc:
            log.warning("verification_feed_undecodable_message", reason=describe_failure(exc))
            self._log.wake()
            return
        self._heard(envelope.position)
        outcome = self.index.offer(envelope)
        if outcome is Offer.APPLIED or outcome is Offer.SET_ASIDE:
            self._notify_advanced()
        elif outcome is Offer.GAP:
            self._log.wake()

    def _heard(self, position: int) -> None:
        self.index.note_head(position)

    def _notify_advanced(self) -> None:
        self.last_applied_at = time.monotonic()
        advanced, self._advanced = self._advanced, asyncio.Event()
        advanced.set()

    async def _follow_postgres(self) -> None:
        async def step(head: int) -> None:
            self._heard(head)
            await self.catch_up()

        def applied(head: int) -> bool:
            # This replica's own commits are applied before their NOTIFY is heard: a
            # catch-up for them would read nothing (a quarantine to save still needs one).
            return self.index.position >= head and not self.index.unsaved_quarantines

        await self._log.follow(step, what="verification_index", applied=applied)

    async def _follow_jetstream(self) -> None:
        import nats
        from nats.js.api import DeliverPolicy

        backoff = self.retry.backoff()
        unavailable = False  # said once, so that the recovery can be said too
        while True:
            client = None
            try:
                client = await nats.connect(
                    servers=nats_servers(self.nats_url or ""), max_reconnect_attempts=-1
                )
                js = client.jetstream()

                async def deliver(msg: Msg) -> None:
                    try:
                        self.offer(msg.data)
                    except Exception:
                        log.exception("verification_feed_bad_message", subject=msg.subject)

                await js.subscribe(
                    f"{self.nats_subject_prefix}.>",
                    stream=self.nats_stream,
                    cb=deliver,
                    ordered_consumer=True,
                    deliver_policy=DeliverPolicy.NEW,
                    # Missed heartbeats make nats-py recreate the consumer: it lives on one
                    # server, and on a cluster that server may be the one that goes away.
                    idle_heartbeat=5.0,
                )
                self.jetstream_connected = True
                backoff.reset()
                if unavailable:
                    log.info("verification_feed_jetstream_subscribed", stream=self.nats_stream)
                    unavailable = False
                # Anything published between the load and this subscription is
                # in PostgreSQL; the next gap or notification brings it in.
                self._log.wake()
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Typically: the stream is not provisioned yet. PostgreSQL carries on alone.
                if not unavailable:
                    log.info("verification_feed_jetstream_unavailable", error=type(exc).__name__)
                    unavailable = True
                await asyncio.sleep(backoff.next())
            finally:
                self.jetstream_connected = False
                if client is not None:
                    with contextlib.suppress(Exception):
                        await client.close()
