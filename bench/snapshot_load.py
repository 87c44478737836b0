"""Loading a registry snapshot in-process: CPU seconds per phase, and bytes per key
(``python -m bench.snapshot_load --keys 1000000``).

N key states shaped as ``bench.cold_start``'s log leaves them (each key generated,
then renamed, disabled and enabled, rotated or revoked: a quarter keep a previous
secret) are encoded as snapshot chunks and stored in a scratch database. Then:

- encoding: CPU seconds, and the longest single step the writer takes between two
  turns of the event loop (the longest loop stall it causes), measured by a probe
  task while ``ChunkBuilder`` and ``fold_chunk`` run as the writer runs them;
- loading into a fresh ``VerificationIndex`` as a replica does (chunks read from
  PostgreSQL and checked against their digests, decoded, entries built), with
  and without fetching the next chunk while one is decoded: CPU and wall seconds;
- the index's live bytes per key (tracemalloc, a separate load).

The baseline, measured in the same run on the same states: ``json.loads`` alone of
the same keys as JSON rows (the format-1 layout), a floor under what format 1 cost.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import secrets
import time
import tracemalloc
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg

from bench.rebuild import _server_url
from bench.support import migrated_database
from service.domain.ids import new_key_id
from service.domain.state import KeyState
from service.snapshot_tail import StepsByKey
from service.snapshot_writer import LoopTurns, fold_chunk
from service.store.chunk_builder import ChunkBuilder
from service.store.registry_snapshot import CHUNK_KEYS, SnapshotHeader, SnapshotStore
from service.store.snapshot_chunks import decode_chunk
from service.store.snapshot_rows import state_row
from service.verification.feed import collector_paused
from service.verification.index import VerificationIndex

START = datetime(2025, 1, 1, tzinfo=UTC)
PEPPER = b"bench-snapshot-load"


def bench_state(number: int) -> KeyState:
    """Key ``number`` as ``bench.cold_start``'s log leaves it (story ``number % 4``)."""
    at = START + timedelta(seconds=number)
    story = number % 4
    return KeyState(
        key_id=new_key_id(),
        org_id=f"org-{number % 1000}",
        name=f"bench key {number}.2",
        type="secret",
        environment="live",
        status="revoked" if story == 3 else "active",
        scopes=("orders:*",),
        allowed_origins=(),
        resource=None,
        algorithm=None,
        public_key=None,
        secret_hash=secrets.token_hex(32),
        hint="sk_live_BBBB...YYYY" if story == 2 else "sk_live_AAAA...ZZZZ",
        metadata={},
        rate_limit=None,
        created_at=at,
        updated_at=at + timedelta(milliseconds=2),
        expires_at=None,
        version=3,
        revoked_at=at + timedelta(milliseconds=2) if story == 3 else None,
        previous_secret_hash=secrets.token_hex(32) if story == 2 else None,
        previous_valid_until=datetime(2025, 1, 2, tzinfo=UTC) if story == 2 else None,
        position=3 * number + 3,
    )


class LoopLag:
    """The longest the event loop went without running this probe (1 ms naps): in
    wall time (which counts the process being descheduled on a busy machine) and in
    the process's CPU time (the work that held the loop, alone)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self.worst_cpu = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        while True:
            before, cpu = time.perf_counter(), time.process_time()
            await asyncio.sleep(0.001)
            self.worst = max(self.worst, time.perf_counter() - before - 0.001)
            self.worst_cpu = max(self.worst_cpu, time.process_time() - cpu)

    def __enter__(self) -> LoopLag:
        self._task = asyncio.get_running_loop().create_task(self._probe())
        return self

    def __exit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def _encode(states: list[KeyState]) -> tuple[list[bytes], float, float, LoopLag]:
    """Chunks of ``states`` made as the writer makes them: first as keys born since the
    last snapshot (``ChunkBuilder.add``), then each chunk made again as when one of its
    keys changed (``fold_chunk``: the keys carried over column by column). CPU seconds
    of each, the worst loop stall."""
    bodies = []
    with LoopLag() as lag:
        cpu = time.process_time()
        builder, turns = ChunkBuilder(), LoopTurns()
        for state in states:
            builder.add(state)
            if len(builder) == CHUNK_KEYS:
                bodies.append(builder.body())
                builder = ChunkBuilder()
                await asyncio.sleep(0)  # the writer awaits its INSERT here
            await turns.tick()
        if len(builder):
            bodies.append(builder.body())
        born = time.process_time() - cpu

        cpu = time.process_time()
        advanced = []
        for body in bodies:
            # Every key carried over, as when each chunk has a changed key.
            advanced.append((await fold_chunk(decode_chunk(body), StepsByKey(), {})).body())
            await asyncio.sleep(0)
        advance = time.process_time() - cpu
    return advanced, born, advance, lag


async def _load(
    conn: asyncpg.Connection, store: SnapshotStore, header: SnapshotHeader
) -> tuple[VerificationIndex, float, float]:
    index = VerificationIndex()
    gc.collect()
    cpu, wall = time.process_time(), time.perf_counter()
    with collector_paused():  # as ``IndexFeed.load_snapshot`` loads
        async for body in store.read_bodies(conn, header):
            index.load_chunk(decode_chunk(body))
    return index, time.process_time() - cpu, time.perf_counter() - wall


async def index_bytes_per_key(
    conn: asyncpg.Connection, store: SnapshotStore, header: SnapshotHeader
) -> float:
    """Live bytes per key of an index loaded from ``header``'s snapshot (tracemalloc; the
    chunks are decoded while it traces, so the keys' ids and names count too)."""
    bodies = [body async for body in store.read_bodies(conn, header)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = VerificationIndex()
    for body in bodies:
        index.load_chunk(decode_chunk(body))
    bodies.clear()
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / len(index)


async def run(server_url: str, keys: int) -> list[str]:
    """Every measurement, in a scratch database dropped afterwards."""
    states = [bench_state(number) for number in range(keys)]
    out = [f"{keys:,} keys, chunks of {CHUNK_KEYS:,}"]

    rows = [
        json.dumps([state_row(s) for s in states[i : i + CHUNK_KEYS]]).encode()
        for i in range(0, keys, CHUNK_KEYS)
    ]
    cpu = time.process_time()
    for body in rows:
        json.loads(body)
    baseline = time.process_time() - cpu
    json_bytes = sum(map(len, rows))
    del rows

    # As in ``keyledger serve`` once its index is loaded: what exists is frozen, so the
    # stalls measured are the writer's own, not full collections over the states.
    gc.freeze()
    bodies, born_cpu, advance_cpu, stall = await _encode(states)
    gc.unfreeze()
    size = sum(map(len, bodies))
    del states
    gc.collect()
    async with migrated_database(server_url, prefix="keyledger_bench") as (_, pool):
        store = SnapshotStore(PEPPER)

        async def chunks() -> AsyncIterator[tuple[bytes, int]]:
            for body in bodies:
                yield body, len(decode_chunk(body).key_ids)

        async with pool.acquire() as conn:
            header = await store.write(conn, position=1, log_hash="0" * 64, chunks=chunks())
            bodies.clear()
            best = (9e9, 9e9)
            for _ in range(2):
                index, load_cpu, load_wall = await _load(conn, store, header)
                assert len(index) == keys
                best = min(best, (load_cpu, load_wall))
                del index
            per_key = await index_bytes_per_key(conn, store, header)
    out += [
        f"format 1 (JSON rows): {json_bytes / 2**20:.0f} MiB,"
        f" json.loads alone {baseline:.2f} s CPU",
        f"format 2 (columns):   {size / 2**20:.0f} MiB ({size / json_bytes:.2f}x the bytes)",
        f"writer: all keys new {born_cpu:.2f} s CPU; every chunk made again (carried over)"
        f" {advance_cpu:.2f} s CPU; longest loop stall {stall.worst_cpu * 1000:.1f} ms CPU"
        f" ({stall.worst * 1000:.1f} ms wall)",
        "",
        "| load into a fresh index | CPU s | wall s | CPU vs json.loads alone (format 1) |",
        "|---|---:|---:|---:|",
    ]
    load_cpu, load_wall = best
    out.append(f"| format 2 | {load_cpu:.2f} | {load_wall:.2f} | {load_cpu / baseline:.2f}x |")
    out += ["", f"index live bytes per key (tracemalloc): {per_key:.0f}"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--server-url", help="a PostgreSQL server (a scratch db is made there)")
    args = parser.parse_args()
    url, server = _server_url(args.server_url)
    try:
        lines = asyncio.run(run(url, args.keys))
    finally:
        if server is not None:
            server.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
