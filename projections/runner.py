"""The projection runner: feeds the event log to every projection, exactly once.

Each projection has a checkpoint row in ``projection_checkpoints``. One batch
is one transaction: lock the checkpoint row, read the events after it in
position order, let the projection apply them, move the checkpoint. The
changes and the checkpoint commit together, so an event is applied exactly
once, and the row lock makes replicas (and a rebuild's swap) take turns.

An event a projection cannot apply (it does not decode, the database refuses
its row, ``apply`` raises for it) does not stop the projection: its key is
quarantined (``service.store.quarantine``), the key's later events are
skipped, and every other key goes on. Only a gap in the log stops it.

The runner catches up from the log, then follows it with a
``service.store.log_follower.LogFollower``: PostgreSQL ``LISTEN`` on the
channel every append notifies, plus ``wake()`` for callers in this process. A
slow fallback poll is only a safety net for a lost notification.

This replica's own commits are handed over as they commit (``hand_over``, a
commit observer): a batch that continues the checkpoint with them applies
them as they are, without reading the rows back and decoding them again
(``service.store.handed_over``), and their NOTIFY, heard once they are
applied, costs no transaction. Everything else (another replica's events,
a runner that fell behind) is read from the log, the one path for them.

Positions are dense (appends are serialized by one advisory lock, see
``service.store.event_store``), so an event that commits late cannot be
overtaken. The runner still checks that every batch starts at checkpoint + 1
and has no holes; a gap means the log is damaged, and the projection stops
rather than skip an event.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import asyncpg
import structlog

from projections.isolation import BatchRefused, apply_isolated, apply_or_refuse
from service.domain.state import KeyState
from service.store.event_rows import Committed, missing_position
from service.store.event_store import EventStore, LoggedEvent, UnreadableEvent
from service.store.handed_over import HandedOver, logged_events
from service.store.held_connection import HeldConnection
from service.store.log_follower import LogFollower
from service.store.quarantine import QuarantinedKey, QuarantineLog

log = structlog.get_logger(__name__)
_quarantine = QuarantineLog()


class Projection(Protocol):
    """A read model built from the log. Everything runs inside the runner's transaction."""

    #: The projection's name; also its checkpoint row, its quarantine consumer and CLI name.
    name: str

    @property
    def table(self) -> str | None:
        """The table a rebuild recreates, or None when there is nothing to rebuild."""

    async def apply(self, conn: asyncpg.Connection, events: Sequence[LoggedEvent]) -> None:
        """Apply consecutive events, in position order, to the projection's table.

        Raise when they cannot be applied: the runner then finds the event at
        fault and quarantines its key (see ``apply_isolated``)."""

    def on_table(self, table: str) -> Projection:
        """The same projection filling another table (a rebuild's fresh copy).

        It may hold changes back (e.g. fold in memory) until ``flush``."""

    async def flush(self, conn: asyncpg.Connection) -> Mapping[str, Refusal] | None:
        """Write whatever ``apply`` held back; a no-op for the live projection.

        Returns the keys whose rows the database refused since this copy was
        made (the caller quarantines them); the projection skips their later
        events itself."""

    async def seed(self, conn: asyncpg.Connection, states: Sequence[KeyState]) -> None:
        """Write keys' states as of a registry snapshot into a rebuild's fresh table
        (each state's ``position`` is its last event's); the log after it follows."""

    async def carry_over(self, conn: asyncpg.Connection, old_table: str, new_table: str) -> None:
        """Copy what the events do not hold (e.g. ``last_used_at``) into a rebuilt table."""


class Refusal(NamedTuple):
    """A row a projection could not write while flushing: the key's last position, and why."""

    org_id: str
    position: int
    error: Exception


class ProjectionGap(RuntimeError):
    """The log skipped a position: applying on would silently lose an event."""

    def __init__(self, projection: str, expected: int, found: int) -> None:
        super().__init__(f"{projection}: expected position {expected}, found {found}")
        self.expected = expected
        self.found = found


def check_contiguous(
    name: str, checkpoint: int, events: Sequence[LoggedEvent | UnreadableEvent]
) -> None:
    """Refuse a batch that does not continue exactly at ``checkpoint`` + 1."""
    missing = missing_position(checkpoint, events)
    if missing is not None:
        # The row standing where ``missing`` should be.
        raise ProjectionGap(name, missing, events[missing - checkpoint - 1].position)


async def lock_checkpoint(conn: asyncpg.Connection, name: str, *, durable: bool = True) -> int:
    """Lock a projection's checkpoint row for this transaction; returns its position.

    Not ``durable``: the transaction commits without waiting for its WAL flush
    (``synchronous_commit`` off for it alone). For the runner's batches that is
    safe: a batch's rows and its checkpoint commit together, so a database
    crash can only lose the latest batches whole, and the runner applies them
    again from the log; it spares the disk a flush per batch that the command
    writer's commits would otherwise queue behind.
    """
    # One round trip once the row exists (every time but the first).
    select = "SELECT position FROM projection_checkpoints WHERE name = $1 FOR UPDATE"
    if not durable:
        select = (
            "SELECT position, set_config('synchronous_commit', 'off', true)"
            " FROM projection_checkpoints WHERE name = $1 FOR UPDATE"
        )
    row = await conn.fetchrow(select, name)
    if row is None:
        await conn.execute(
            "INSERT INTO projection_checkpoints (name) VALUES ($1) ON CONFLICT (name) DO NOTHING",
            name,
        )
        row = await conn.fetchrow(select, name)
    position: int = row[0]
    return position


async def save_checkpoint(conn: asyncpg.Connection, name: str, position: int) -> None:
    """Move a projection's checkpoint (inside the transaction that applied the events)."""
    await conn.execute(
        "UPDATE projection_checkpoints SET position = $2, updated_at = now() WHERE name = $1",
        name,
        position,
    )


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """What one exactly-once step did."""

    position: int
    read: int
    quarantined: list[QuarantinedKey]


async def apply_next_batch(
    conn: asyncpg.Connection,
    projection: Projection,
    store: EventStore,
    batch_size: int,
    handed: HandedOver | None = None,
) -> BatchOutcome:
    """One exactly-once step, in its own transaction; poison events quarantine their key.

    The quarantine is read under the checkpoint's row lock, so replicas
    taking turns on a projection agree on which keys are set aside. The
    events after the checkpoint come from ``handed`` when it holds them
    (committed by this replica), else from the log. The batch is applied
    without a savepoint (two round trips fewer); should that fail, the
    transaction is rolled back and the step run again with each event
    isolated (``projections.isolation.apply_isolated``).
    """
    try:
        return await _apply_batch(conn, projection, store, batch_size, handed, savepoints=False)
    except BatchRefused:
        # Rolled back whole: again, the events in savepoints, so the good ones still apply.
        return await _apply_batch(conn, projection, store, batch_size, None, savepoints=True)


async def _apply_batch(
    conn: asyncpg.Connection,
    projection: Projection,
    store: EventStore,
    batch_size: int,
    handed: HandedOver | None,
    *,
    savepoints: bool,
) -> BatchOutcome:
    async with conn.transaction():
        checkpoint = await lock_checkpoint(conn, projection.name, durable=False)
        taken = handed.take(after=checkpoint, limit=batch_size) if handed is not None else []
        rows = logged_events(taken) or await store.read_events_after(conn, checkpoint, batch_size)
        if not rows:
            return BatchOutcome(checkpoint, 0, [])
        check_contiguous(projection.name, checkpoint, rows)
        set_aside = await _quarantine.of_consumer(conn, projection.name)
        if savepoints:
            newly = await apply_isolated(conn, projection, rows, set_aside)
        else:
            newly = await apply_or_refuse(conn, projection, rows, set_aside)
        await _quarantine.record(conn, newly)
        position = rows[-1].position
        await save_checkpoint(conn, projection.name, position)
        return BatchOutcome(position, len(rows), newly)


@dataclass
class _Follower:
    """The runner's view of one projection."""

    projection: Projection
    # This replica's commits not applied yet (``ProjectionRunner.hand_over``).
    handed: HandedOver
    # Its connection, held from batch to batch while batches keep coming.
    conn: HeldConnection
    position: int = 0
    failure: str | None = None
    task: asyncio.Task[None] | None = None


class ProjectionRunner:
    """Runs projections in the background and tells how far each one is."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        database_url: str,
        projections: Sequence[Projection],
        *,
        batch_size: int = 1000,
        fallback_poll_seconds: float = 5.0,
    ) -> None:
        self.pool = pool
        self.database_url = database_url
        self.batch_size = batch_size
        self.fallback_poll_seconds = fallback_poll_seconds
        self.store = EventStore()
        self._followers = {
            p.name: _Follower(p, HandedOver(limit=2 * batch_size), HeldConnection(pool))
            for p in projections
        }
        self._progress = asyncio.Condition()
        self._log_head = 0
        self._log = LogFollower(
            database_url, poll_seconds=fallback_poll_seconds, name="projections"
        )

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        """Start listening and following; returns once every follower has started."""
        async with self.pool.acquire() as conn:
            self._log_head = await self.store.head(conn)
            for follower in self._followers.values():
                async with conn.transaction():
                    follower.position = await lock_checkpoint(conn, follower.projection.name)
        self._log.start()
        for name, follower in self._followers.items():
            follower.task = asyncio.create_task(self._follow(follower), name=f"projection-{name}")

    async def stop(self) -> None:
        """Stop every task and close the listening connection."""
        tasks = [f.task for f in self._followers.values() if f.task]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for follower in self._followers.values():
            await follower.conn.release()
        await self._log.stop()

    # -- what others ask -----------------------------------------------------

    def wake(self, position: int | None = None) -> None:
        """Tell every projection that the log has grown (to ``position`` if known)."""
        self._log.wake(position)

    async def hand_over(self, committed: Sequence[Committed]) -> None:
        """Take this replica's newly committed events (a commit observer), in order, and
        apply them now rather than when their NOTIFY comes back."""
        if not committed:
            return
        for follower in self._followers.values():
            follower.handed.add(committed, leading=True)
        self.wake(committed[-1].position)

    def position(self, name: str) -> int:
        """The last position projection ``name`` has applied."""
        return self._followers[name].position

    def lag(self) -> dict[str, int]:
        """Events each projection is behind the newest position this runner has heard of."""
        head = max(self._log_head, self._log.head)
        return {
            name: max(0, head - follower.position) for name, follower in self._followers.items()
        }

    def failures(self) -> dict[str, str]:
        """Projections that stopped for good (a gap in the log), with the reason."""
        return {name: f.failure for name, f in self._followers.items() if f.failure}

    async def wait_for(self, name: str, position: int, within: float = 1.0) -> bool:
        """Wait up to ``within`` seconds for projection ``name`` to apply ``position``."""
        follower = self._followers[name]
        if follower.position >= position:
            return True
        if follower.failure is not None:
            return False
        self.wake(position)
        try:
            async with asyncio.timeout(within), self._progress:
                await self._progress.wait_for(lambda: follower.position >= position)
        except TimeoutError:
            return False
        return True

    # -- the work ------------------------------------------------------------

    async def _follow(self, follower: _Follower) -> None:
        name = follower.projection.name

        async def step(_head: int) -> None:
            await self._catch_up(follower)

        def applied(head: int) -> bool:
            return follower.position >= head

        try:
            await self._log.follow(
                step, what=f"projection {name}", fatal=(ProjectionGap,), applied=applied
            )
        except ProjectionGap as exc:
            follower.failure = str(exc)
            log.error("projection_gap", projection=name, expected=exc.expected, found=exc.found)

    async def _catch_up(self, follower: _Follower) -> None:
        while True:
            conn = await follower.conn.acquire()
            try:
                outcome = await apply_next_batch(
                    conn, follower.projection, self.store, self.batch_size, follower.handed
                )
            except BaseException:
                await follower.conn.release()  # it may be broken: the next batch takes another
                raise
            follower.conn.done()
            follower.position = outcome.position
            self._log_head = max(self._log_head, outcome.position)
            async with self._progress:
                self._progress.notify_all()
            if outcome.read < self.batch_size:
                return
