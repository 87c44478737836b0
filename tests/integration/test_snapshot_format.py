"""Snapshot chunks in PostgreSQL: a snapshot of the old layout, or one sealed over a chunk
that is truncated or does not add up, is refused whole (the index is left empty, never
half-loaded) and the replica folds the log instead."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable

import asyncpg
import msgspec
import pytest

from service.snapshot_writer import SnapshotWriter
from service.store import registry_snapshot
from service.store.chunk_builder import encode_chunk
from service.store.registry_snapshot import SnapshotHeader, SnapshotStore
from service.store.snapshot_chunks import chunk_states, decode_chunk
from service.store.snapshot_rows import state_row
from service.verification.feed import IndexFeed
from service.verification.index import VerificationIndex
from tests.support.snapshot_log import loaded, picture, snapshot_log_database

PEPPER = ("snapshot-format-" + secrets.token_hex(16)).encode()


@pytest.fixture
async def log_db(postgres_server_url: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    async with snapshot_log_database(postgres_server_url) as (url, pool):
        yield url, pool


def _format_1(body: bytes) -> bytes:
    """The keys of ``body`` as a format-1 chunk: a JSON array of state rows."""
    return json.dumps([state_row(s) for s in chunk_states(decode_chunk(body))]).encode()


def _truncated(body: bytes) -> bytes:
    return body[: len(body) - 7]


def _org_past_its_table(body: bytes) -> bytes:
    chunk = decode_chunk(body)
    return msgspec.msgpack.encode(msgspec.structs.replace(chunk, org=[9] * len(chunk.org)))


async def _replace_snapshot(pool: asyncpg.Pool, chunks: list[bytes]) -> None:
    """Put in place of the newest snapshot one of ``chunks`` that is sealed, made from
    this log, with this pepper: only its contents (or its ``format``) are wrong."""
    store = SnapshotStore(PEPPER)
    async with pool.acquire() as conn:
        [newest] = await store.newest(conn, 1)

        async def bodies() -> AsyncIterator[tuple[bytes, int]]:
            for body in chunks:
                yield body, 1

        await store.write(conn, position=newest.position, log_hash=newest.log_hash, chunks=bodies())
        await conn.execute("DELETE FROM registry_snapshots WHERE id = $1", newest.id)


async def _written(pool: asyncpg.Pool) -> list[bytes]:
    """A snapshot of the log by the writer; its chunk bodies."""
    header: SnapshotHeader | None = await SnapshotWriter(
        pool, PEPPER, interval_seconds=60
    ).write_once()
    assert header is not None
    async with pool.acquire() as conn:
        return [body async for body in SnapshotStore(PEPPER).read_bodies(conn, header)]


async def _refused_then_folded(url: str, pool: asyncpg.Pool) -> None:
    feed = IndexFeed(VerificationIndex(), pool, url, snapshots=SnapshotStore(PEPPER))
    assert await feed.load_snapshot() is None
    assert len(feed.index) == 0 and feed.index.position == 0  # nothing half-loaded
    await feed.start(follow_postgres=False)
    assert picture(feed.index) == picture((await loaded(pool, url, None)).index)


async def test_a_snapshot_of_format_1_is_ignored_and_the_log_folded(
    log_db: tuple[str, asyncpg.Pool], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, pool = log_db
    [body] = await _written(pool)
    with monkeypatch.context() as patch:
        # Sealed as a format-1 writer sealed its snapshots.
        patch.setattr(registry_snapshot, "snapshot_format", lambda: "v1-" + "0" * 32)
        await _replace_snapshot(pool, [_format_1(body)])
    await _refused_then_folded(url, pool)


@pytest.mark.parametrize(
    "damage",
    [_format_1, _truncated, _org_past_its_table],
    ids=["format_1_body", "truncated", "org_past_its_table"],
)
async def test_a_sealed_chunk_that_is_not_whole_is_refused_not_half_loaded(
    log_db: tuple[str, asyncpg.Pool], damage: Callable[[bytes], bytes]
) -> None:
    url, pool = log_db
    [body] = await _written(pool)
    states = list(chunk_states(decode_chunk(body)))
    # A good chunk first, so that a replica would have taken keys before the bad one.
    good, bad = encode_chunk(states[:2]), encode_chunk(states[2:])
    await _replace_snapshot(pool, [good, damage(bad)])
    await _refused_then_folded(url, pool)
