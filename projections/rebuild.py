"""Rebuilding a projection from the first event, while the service keeps answering.

1. Fill a fresh table (``<table>_rebuild``, a ``LIKE`` copy of the live one)
   from position 1 to the log head, in large batches, outside any lock. The
   projection may fold in memory and write its rows at ``flush``.
2. Swap, in one short transaction: lock the projection's checkpoint row (the
   live runners wait), lock the live table, apply whatever the live table got
   meanwhile, carry over what events do not hold, drop the live table, rename
   the fresh one in its place, and move the checkpoint.

Readers see either the old table or the new one, never a half-built one;
queries that arrive during the swap wait a moment and then read the new table.

With a ``SnapshotStore``, step 1 starts from the newest registry snapshot
that checks out (``service.store.registry_snapshot``): its states are written
to the fresh table and its keys set aside are set aside here too, and only
the log after it is folded. A snapshot that does not check out is ignored
with a warning, and the rebuild starts from position 1.

A rebuild starts with an empty quarantine: a key set aside by the live
projection gets another chance (after a fix, a rebuild is the way out). An
event that still cannot be applied quarantines its key again, exactly as the
runner does, and the swap replaces the projection's quarantine with the
rebuild's.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
from collections.abc import Iterator
from dataclasses import dataclass

import asyncpg
import structlog

from projections.isolation import apply_isolated, refusals_set_aside
from projections.runner import Projection, check_contiguous, lock_checkpoint, save_checkpoint
from service.store.event_store import EventStore, LoggedEvent, UnreadableEvent
from service.store.quarantine import QuarantinedKey, QuarantineLog
from service.store.registry_snapshot import SnapshotStore
from service.store.snapshot_chunks import Chunk, chunk_states
from service.store.snapshot_rows import state_from_row

log = structlog.get_logger(__name__)


class RebuildRefused(RuntimeError):
    """The projection cannot be rebuilt now (no table, or a rebuild is running)."""


@dataclass(frozen=True, slots=True)
class RebuildReport:
    """What a rebuild did."""

    name: str
    events: int
    position: int
    seconds: float
    # Keys the rebuilt projection has set aside (quarantined), see service.store.quarantine.
    quarantined: int = 0
    # The snapshot position the rebuild started from (None: the first event).
    started_from: int | None = None

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@contextlib.contextmanager
def _fewer_collections(young_threshold: int = 100_000) -> Iterator[None]:
    """Let the cyclic garbage collector wait for many more new objects than usual.

    A page of events is tens of thousands of short-lived, acyclic objects
    (freed by reference counting). At the default threshold of 700 the
    collector scans each page several times and promotes it to the old
    generation, whose full scans then took ~15% of a rebuild. Collection
    still happens, just less often; the old thresholds are restored after.
    """
    previous = gc.get_threshold()
    gc.set_threshold(max(young_threshold, previous[0]), *previous[1:])
    try:
        yield
    finally:
        gc.set_threshold(*previous)


async def _fill(
    conn: asyncpg.Connection,
    target: Projection,
    store: EventStore,
    name: str,
    after: int,
    until: int,
    batch_size: int,
    set_aside: dict[str, QuarantinedKey],
    reader: asyncpg.Connection | None = None,
) -> int:
    """Apply events (after, until] to ``target``; returns the last position applied.

    Poison events quarantine their key into ``set_aside`` (see ``apply_isolated``).

    With a second ``reader`` connection the next page is read while this one
    is applied, so the database works while Python folds (events never change,
    so reading them on another connection is safe).
    """
    reader = reader or conn

    async def page(position: int) -> list[LoggedEvent | UnreadableEvent]:
        if position >= until:
            return []
        return await store.read_events_after(reader, position, min(batch_size, until - position))

    position = after
    events = await page(position)
    while events:
        upcoming = asyncio.ensure_future(page(events[-1].position)) if reader is not conn else None
        try:
            async with conn.transaction():
                check_contiguous(name, position, events)
                await apply_isolated(conn, target, events, set_aside)
        except BaseException:
            if upcoming is not None:
                upcoming.cancel()
            raise
        position = events[-1].position
        events = await upcoming if upcoming is not None else await page(position)
    return position


async def _swap(
    conn: asyncpg.Connection,
    projection: Projection,
    fresh: str,
    store: EventStore,
    filled_to: int,
    batch_size: int,
    set_aside: dict[str, QuarantinedKey],
) -> int:
    live = projection.table
    assert live is not None
    async with conn.transaction():
        await conn.execute("SET LOCAL lock_timeout = '10s'")
        checkpoint = await lock_checkpoint(conn, projection.name)
        await conn.execute(f"LOCK TABLE {live} IN ACCESS EXCLUSIVE MODE")
        target = projection.on_table(fresh)
        position = await _fill(
            conn, target, store, projection.name, filled_to, checkpoint, batch_size, set_aside
        )
        refusals_set_aside(projection.name, await target.flush(conn), set_aside)
        await QuarantineLog().replace(conn, projection.name, set_aside.values())
        await projection.carry_over(conn, live, fresh)
        indexes = await conn.fetch("SELECT indexname FROM pg_indexes WHERE tablename = $1", fresh)
        await conn.execute(f"DROP TABLE {live}")
        await conn.execute(f"ALTER TABLE {fresh} RENAME TO {live}")
        for row in indexes:
            # LIKE … INCLUDING ALL named them after the fresh table; give back the live names.
            old_name = row["indexname"]
            if old_name.startswith(fresh):
                await conn.execute(
                    f"ALTER INDEX {old_name} RENAME TO {live}{old_name[len(fresh) :]}"
                )
        await save_checkpoint(conn, projection.name, position)
        return position


async def _seed(
    conn: asyncpg.Connection,
    target: Projection,
    snapshots: SnapshotStore,
    fresh: str,
    set_aside: dict[str, QuarantinedKey],
) -> int | None:
    """Fill the fresh table from the newest snapshot that checks out; its position."""

    async def take(chunk: Chunk) -> None:
        await target.seed(conn, list(chunk_states(chunk)))

    async def reset() -> None:
        await conn.execute(f"TRUNCATE {fresh}")

    header = await snapshots.load_newest(conn, take, reset)
    if header is None:
        return None
    # A key set aside keeps the row it had before its poison event, as in a rebuild
    # from the first event.
    kept = header.set_aside(target.name)
    await target.seed(conn, [state_from_row(last) for _, last in kept if last is not None])
    for entry, _ in kept:
        set_aside[entry.key_id] = entry
    return header.position


async def rebuild(
    pool: asyncpg.Pool,
    projection: Projection,
    *,
    batch_size: int = 5000,
    snapshots: SnapshotStore | None = None,
) -> RebuildReport:
    """Rebuild ``projection`` into a fresh table and swap it in atomically: from event 1,
    or from the newest snapshot of ``snapshots`` that checks out and the log after it."""
    live = projection.table
    if live is None:
        raise RebuildRefused(f"{projection.name} has no table to rebuild")
    fresh = f"{live}_rebuild"
    store = EventStore()
    started = time.perf_counter()
    async with pool.acquire() as conn:
        locked = await conn.fetchval(
            "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", f"rebuild:{projection.name}"
        )
        if not locked:
            raise RebuildRefused(f"a rebuild of {projection.name} is already running")
        try:
            await conn.execute(f"DROP TABLE IF EXISTS {fresh}")
            await conn.execute(f"CREATE TABLE {fresh} (LIKE {live} INCLUDING ALL)")
            try:
                head = await store.head(conn)
                target = projection.on_table(fresh)
                set_aside: dict[str, QuarantinedKey] = {}
                started_from = None
                if snapshots is not None:
                    started_from = await _seed(conn, target, snapshots, fresh, set_aside)
                async with pool.acquire() as reader:
                    with _fewer_collections():
                        filled = await _fill(
                            conn,
                            target,
                            store,
                            projection.name,
                            started_from or 0,
                            max(head, started_from or 0),
                            batch_size,
                            set_aside,
                            reader,
                        )
                        async with conn.transaction():
                            refused = await target.flush(conn)
                        refusals_set_aside(projection.name, refused, set_aside)
                position = await _swap(
                    conn, projection, fresh, store, filled, batch_size, set_aside
                )
            except BaseException:
                await conn.execute(f"DROP TABLE IF EXISTS {fresh}")
                raise
        finally:
            await conn.execute(
                "SELECT pg_advisory_unlock(hashtextextended($1, 0))", f"rebuild:{projection.name}"
            )
    report = RebuildReport(
        projection.name,
        position - (started_from or 0),
        position,
        time.perf_counter() - started,
        len(set_aside),
        started_from,
    )
    log.info(
        "projection_rebuilt",
        projection=projection.name,
        events=report.events,
        quarantined=report.quarantined,
        started_from=started_from,
        seconds=round(report.seconds, 3),
    )
    return report
