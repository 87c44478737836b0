"""Writing registry snapshots: the newest snapshot, advanced along the log.

One replica at a time writes (a session advisory lock, tried on every tick:
the others skip that tick). A new snapshot is the newest one that checks out
(``SnapshotStore.check``; never one that does not), with the log after it
folded in: the events after its position are read in pages, grouped by key,
and the old snapshot is streamed chunk by chunk, each changed key's row folded
with its events (``evolve``, as the index does), unchanged rows carried over.
Keys born after it come last. A chunk none of whose keys changed is carried
over as it is, without decoding it. So the writer holds one chunk and at most
``EVENTS_PER_SNAPSHOT`` events in memory, never the whole registry; a longer
log is covered in several snapshots, each committed whole.

The writer runs in a serving replica's event loop: it folds and encodes in
slices of ``SLICE_SECONDS`` and lets the loop run between them, so requests
wait for a slice (or the encoding of one chunk) at most, never for a whole
snapshot. The events it holds are kept as read (``service.snapshot_tail``),
which the cyclic collector stops tracking, so holding many does not lengthen
the replica's full collections either (``python -m bench.snapshot_load`` and
``bench.cold_start`` measure the longest stall).

A key is set aside exactly as a replica's verification index sets it aside
(its event does not decode, or ``evolve`` refuses it): its row leaves the
snapshot, its later events are skipped, and the snapshot lists it, so that a
replica starting from the snapshot holds the same keys, and quarantines the
same ones, as one that folded the whole log (``tests`` check it).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import asyncpg
import structlog

from service.domain.state import KeyState
from service.snapshot_tail import READ_COLUMNS, Step, StepsByKey, Tail, fold_steps, positioned
from service.store.chunk_builder import ChunkBuilder
from service.store.event_rows import missing_position
from service.store.event_store import EventStore
from service.store.quarantine import (
    INDEX_CONSUMER,
)
from service.store.registry_snapshot import (
    CHUNK_KEYS,
    SetAside,
    SnapshotHeader,
    SnapshotStore,
    refused,
)
from service.store.snapshot_chunks import (
    NO_RECORD,
    Chunk,
    chunk_key_ids,
    cold_columns,
    decode_chunk,
    extras_by_row,
    odd_states,
    state_at,
)
from service.store.snapshot_rows import SnapshotRefused

log = structlog.get_logger(__name__)
# pg_try_advisory_lock(classid, objid): classid "ks" (keyledger snapshot), objid 1.
SNAPSHOT_LOCK_CLASS = 0x6B73
# At most this many events are held to advance a snapshot; more make several.
EVENTS_PER_SNAPSHOT = 250_000
_PAGE = 5000
# Work done between two turns of the event loop while a snapshot is made.
SLICE_SECONDS = 0.005


class LoopTurns:
    """Lets the event loop run once ``SLICE_SECONDS`` of work have gone by."""

    def __init__(self) -> None:
        self._since = time.perf_counter()

    async def tick(self) -> None:
        """Called after each step of work: gives the loop a turn when one is due."""
        if time.perf_counter() - self._since >= SLICE_SECONDS:
            await asyncio.sleep(0)
            self._since = time.perf_counter()


class SnapshotWriter:
    """Writes a snapshot every ``interval_seconds`` when the log has moved on."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        pepper: bytes,
        *,
        interval_seconds: float,
        keep: int = 2,
        events_per_snapshot: int = EVENTS_PER_SNAPSHOT,
    ) -> None:
        self.pool = pool
        self.snapshots = SnapshotStore(pepper)
        self.interval = interval_seconds
        self.keep = keep
        self.events_per_snapshot = events_per_snapshot
        self.store = EventStore()

    async def run(self) -> None:
        """Write snapshots forever; errors are logged and the next tick tries again."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.write_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("registry_snapshot_failed")

    async def write_once(self) -> SnapshotHeader | None:
        """Bring the snapshots up to the log head now, if no other replica is at it.

        Returns the newest snapshot written, or None (another replica holds
        the lock, or the newest snapshot already stands at the head)."""
        async with self.pool.acquire() as conn:
            locked = await conn.fetchval("SELECT pg_try_advisory_lock($1, 1)", SNAPSHOT_LOCK_CLASS)
            if not locked:
                return None
            try:
                return await self._advance(conn)
            except SnapshotRefused as exc:
                # Its header checked out but a chunk did not: build on an older one next time.
                log.warning("registry_snapshot_damaged_deleted", reason=str(exc))
                await self._delete_newest(conn)
                return None
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1, 1)", SNAPSHOT_LOCK_CLASS)

    async def _delete_newest(self, conn: asyncpg.Connection) -> None:
        newest = await self._newest_valid(conn)
        if newest is not None:
            await conn.execute("DELETE FROM registry_snapshots WHERE id = $1", newest.id)

    async def _advance(self, conn: asyncpg.Connection) -> SnapshotHeader | None:
        base = await self._newest_valid(conn)
        head = await self.store.head(conn)
        written = None
        while (base.position if base else 0) < head:
            header = await self._next(conn, base, head)
            if header is None:
                break
            written = base = header
        if written is not None:
            await self.snapshots.prune(conn, self.keep)
            log.info(
                "registry_snapshot_written",
                position=written.position,
                keys=written.keys,
                quarantined=len(written.quarantines(INDEX_CONSUMER)),
            )
        return written

    async def _newest_valid(self, conn: asyncpg.Connection) -> SnapshotHeader | None:
        for header in await self.snapshots.newest(conn):
            try:
                await self.snapshots.check(conn, header)
                return header
            except SnapshotRefused as exc:
                refused(header, exc)
        return None

    async def _next(
        self, conn: asyncpg.Connection, base: SnapshotHeader | None, head: int
    ) -> SnapshotHeader | None:
        """A snapshot up to ``events_per_snapshot`` events past ``base``; None at a gap."""
        start = base.position if base else 0
        until = min(head, start + self.events_per_snapshot)
        quarantined = (
            {aside.entry.key_id: aside for aside in base.set_aside(INDEX_CONSUMER)} if base else {}
        )
        tail = Tail(start, set(quarantined))
        while tail.position < until:
            after = tail.position
            # Rows kept as read (untracked tuples), decoded when their key is folded.
            page = await self.store.read_tolerantly(
                conn,
                READ_COLUMNS,
                tuple,
                "position > $1",
                [after],
                limit=min(_PAGE, until - after),
            )
            if not page or missing_position(after, [positioned(row) for row in page]) is not None:
                # The index stops at a hole too (and refuses to verify): so does the snapshot.
                log.warning("registry_snapshot_stopped_at_gap", after=after)
                return None
            for row in page:
                tail.add(row)
        log_hash = await conn.fetchval("SELECT hash FROM events WHERE position = $1", until)

        async def chunks() -> AsyncIterator[tuple[bytes, int]]:
            if base is not None:
                async for body in self.snapshots.read_bodies(conn, base):
                    key_ids = chunk_key_ids(body)
                    if tail.by_key.isdisjoint(key_ids):
                        yield body, len(key_ids)  # nothing changed: carried over as it is
                        continue
                    folded = await fold_chunk(decode_chunk(body), tail.by_key, quarantined)
                    if len(folded):
                        yield folded.body(), len(folded)
            async for builder in born_chunks(tail.by_key, quarantined):
                yield builder.body(), len(builder)

        return await self.snapshots.write(
            conn,
            position=until,
            log_hash=log_hash,
            chunks=chunks(),
            # Read once the chunks are written: folding them sets keys aside.
            quarantined=lambda: list(quarantined.values()),
        )


async def fold_chunk(
    chunk: Chunk, changes: StepsByKey, quarantined: dict[str, SetAside]
) -> ChunkBuilder:
    """A chunk of the old snapshot with its changed keys folded (and taken out of
    ``changes``); keys set aside leave it for ``quarantined``. Unchanged keys are
    carried over column by column, without making their states."""
    cold = cold_columns(chunk)
    extras = extras_by_row(chunk)
    builder = ChunkBuilder()
    turns = LoopTurns()

    def fold(state: KeyState, steps: list[Step]) -> None:
        folded = fold_steps(state.key_id, state, steps)
        if isinstance(folded, SetAside):
            quarantined[state.key_id] = folded
        else:
            builder.add(folded)

    for row, key_id in enumerate(chunk.key_ids):
        steps = changes.pop(key_id)
        record = extras.get(row)
        if steps is None:
            builder.carry(chunk, cold, row, record)
        else:
            fold(state_at(chunk, cold, row, record or NO_RECORD), steps)
        await turns.tick()
    for text, state in zip(chunk.odd_states, odd_states(chunk.odd_states), strict=True):
        steps = changes.pop(state.key_id)
        if steps is None:
            builder.carry_odd(text)
        else:
            fold(state, steps)
    return builder


async def born_chunks(
    changes: StepsByKey, quarantined: dict[str, SetAside]
) -> AsyncIterator[ChunkBuilder]:
    """The keys the old snapshot did not hold (born since, or a stream that begins
    wrongly and is set aside), after ``fold_chunk`` has taken the others: chunks of
    up to ``CHUNK_KEYS`` states."""
    builder = ChunkBuilder()
    turns = LoopTurns()
    for key_id, steps in changes.drain():
        folded = fold_steps(key_id, None, steps)
        if isinstance(folded, SetAside):
            quarantined[key_id] = folded
        else:
            builder.add(folded)
        if len(builder) == CHUNK_KEYS:
            yield builder
            builder = ChunkBuilder()
        await turns.tick()
    if len(builder):
        yield builder
