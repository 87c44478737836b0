"""Benchmark: rebuild ``key_views`` from 100k events (``python -m bench.rebuild``).

In a scratch database it writes a valid, hash-chained log of N events (keys
generated, renamed, disabled, enabled, rotated, revoked, interleaved at
random) with the real codec (``events.codec.seal``), loaded by COPY with
exactly the column values ``EventStore.append`` writes. It checks the chain,
then times ``projections.rebuild.rebuild`` of ``key_views`` and, as a
baseline measured in the same run, a raw ``INSERT`` (executemany) of the
same event rows into an empty copy of the events table.

The server comes from ``--server-url``, else ``KEYLEDGER_BENCH_DATABASE_URL``
or ``KEYLEDGER_TEST_DATABASE_URL``, else an embedded PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypedDict

import asyncpg

from bench.support import scratch_database
from events.codec import GENESIS_HASH, seal
from events.models import (
    Actor,
    KeyDisabled,
    KeyEnabled,
    KeyEvent,
    KeyGenerated,
    KeyRenamed,
    KeyRevoked,
    KeyRotated,
)
from events.vocabulary import ENVIRONMENTS
from projections.key_views import KeyViews
from projections.rebuild import rebuild
from service.domain.ids import new_key_id
from service.store.audit_chain import verify_chain
from service.store.event_store import EVENT_COLUMNS, row_of
from service.store.migrate import migrate

ACTOR = Actor(id="bench", request_id="bench")
_COLUMNS = [name.strip() for name in EVENT_COLUMNS.split(",")]


class _KeyOf(TypedDict):
    key_id: str
    org_id: str


def _key_story(key_id: str, org_id: str, start: datetime, rng: random.Random) -> list[KeyEvent]:
    """One key's events: generated, then a few lifecycle changes (5 on average)."""
    base = _KeyOf(key_id=key_id, org_id=org_id)
    at = start
    story: list[KeyEvent] = [
        KeyGenerated(
            **base,
            occurred_at=at,
            name="bench key",
            type="secret",
            environment=rng.choice(ENVIRONMENTS),
            scopes=("templates:read", "orders:*"),
            secret_hash=uuid.uuid4().hex * 2,
            hint="sk_live_AAAA…ZZZZ",
            metadata={"plan": "pro", "team": rng.randrange(100)},
        )
    ]
    name = "bench key"
    for step in range(4):
        at += timedelta(seconds=1)
        if step == 1:
            story += [
                KeyDisabled(**base, occurred_at=at, reason="pause"),
            ]
        elif step == 2:
            story.append(KeyEnabled(**base, occurred_at=at))
        elif step == 3 and rng.random() < 0.5:
            story.append(KeyRevoked(**base, occurred_at=at, reason="unused"))
        elif step == 3:
            story.append(
                KeyRotated(
                    **base,
                    occurred_at=at,
                    secret_hash=uuid.uuid4().hex * 2,
                    hint="sk_live_BBBB…YYYY",
                    previous_valid_until=at + timedelta(hours=24),
                )
            )
        else:
            story.append(KeyRenamed(**base, occurred_at=at, name=f"{name}!", previous_name=name))
            name += "!"
    return story


def event_rows(count: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """``count`` events of ``count // 5`` keys, interleaved, sealed into one chain."""
    rng = random.Random(seed)
    start = datetime(2025, 1, 1, tzinfo=UTC)
    stories = [
        _key_story(new_key_id(), f"org-{i % 50}", start + timedelta(minutes=i), rng)
        for i in range(count // 5)
    ]
    versions = [0] * len(stories)
    open_keys = list(range(len(stories)))
    previous = GENESIS_HASH
    position = 0
    while open_keys and position < count:
        slot = rng.randrange(min(len(open_keys), 64))  # keys overlap like real traffic
        key = open_keys[slot]
        event = stories[key][versions[key]]
        versions[key] += 1
        if versions[key] == len(stories[key]):
            open_keys.pop(slot)
        position += 1
        envelope = seal(
            event,
            event_id=uuid.uuid4(),
            stream_version=versions[key],
            position=position,
            actor=ACTOR,
            previous_hash=previous,
        )
        previous = envelope.hash
        yield row_of(envelope)


async def run(server_url: str, count: int, batch_size: int) -> dict[str, float]:
    """Every measurement of one run, in a scratch database dropped afterwards."""
    async with scratch_database(server_url, prefix="keyledger_bench") as url:
        conn = await asyncpg.connect(url)
        await migrate(conn)
        started = time.perf_counter()
        rows = list(event_rows(count))
        sealed = time.perf_counter() - started

        started = time.perf_counter()
        await conn.copy_records_to_table("events", records=rows, columns=_COLUMNS)
        copied = time.perf_counter() - started

        await conn.execute("CREATE TABLE events_baseline (LIKE events INCLUDING ALL)")
        placeholders = ", ".join(f"${i}" for i in range(1, len(_COLUMNS) + 1))
        started = time.perf_counter()
        async with conn.transaction():
            await conn.executemany(
                f"INSERT INTO events_baseline ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                rows,
            )
        raw_insert = time.perf_counter() - started
        await conn.execute("DROP TABLE events_baseline")
        await conn.execute("ANALYZE events")

        started = time.perf_counter()
        chain = await verify_chain(conn)
        verified = time.perf_counter() - started
        if not chain.ok or chain.events != count:
            raise RuntimeError(f"the benchmark log is not a valid chain: {chain}")
        await conn.close()

        pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
        try:
            report = await rebuild(pool, KeyViews(), batch_size=batch_size)
            keys = await pool.fetchval("SELECT count(*) FROM key_views")
        finally:
            await pool.close()
    return {
        "events": count,
        "keys": keys,
        "seal_s": sealed,
        "copy_s": copied,
        "raw_insert_s": raw_insert,
        "verify_s": verified,
        "rebuild_s": report.seconds,
    }


def _server_url(given: str | None) -> tuple[str, Any]:
    url = (
        given
        or os.environ.get("KEYLEDGER_BENCH_DATABASE_URL")
        or os.environ.get("KEYLEDGER_TEST_DATABASE_URL")
    )
    if url:
        return url, None
    from service.embedded import EmbeddedPostgres

    server = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="keyledger-bench-")) / "data")
    return server.start(), server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--server-url", help="a PostgreSQL server (a scratch db is made there)")
    args = parser.parse_args()
    url, server = _server_url(args.server_url)
    try:
        result = asyncio.run(run(url, args.events, args.batch_size))
    finally:
        if server is not None:
            server.stop()
    n = result["events"]
    rebuild_rate = n / result["rebuild_s"]
    insert_rate = n / result["raw_insert_s"]
    print(f"events: {n:,} ({result['keys']:,} keys), batch size {args.batch_size}")
    print(f"rebuild key_views:     {result['rebuild_s']:.2f} s  {rebuild_rate:>10,.0f} events/s")
    print(f"baseline raw INSERT:   {result['raw_insert_s']:.2f} s  {insert_rate:>10,.0f} rows/s")
    print(f"ratio rebuild/INSERT:  {rebuild_rate / insert_rate:.2f}")
    verify_rate = n / result["verify_s"]
    print(f"audit verify (chain):  {result['verify_s']:.2f} s  {verify_rate:>10,.0f} events/s")
    print(f"(setup: seal {result['seal_s']:.2f} s, COPY load {result['copy_s']:.2f} s)")
    goal = "meets" if rebuild_rate >= 20_000 else "BELOW"
    print(f"goal >= 20,000 events/s: {goal}")


if __name__ == "__main__":
    main()
