"""A held connection: the same one from use to use while uses keep coming, back to the pool
after its linger, at once after a failure."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bench.support import migrated_database
from service.store.held_connection import HeldConnection


@pytest.fixture
async def pool(postgres_server_url: str) -> AsyncIterator[asyncpg.Pool]:
    async with migrated_database(postgres_server_url, prefix="keyledger_held") as (_, made):
        yield made


async def _until_idle(pool: asyncpg.Pool, connections: int) -> None:
    while pool.get_idle_size() < connections:  # noqa: ASYNC110 - released by a timer's task
        await asyncio.sleep(0)


async def test_a_use_soon_after_the_last_takes_the_same_connection(pool: asyncpg.Pool) -> None:
    held = HeldConnection(pool, linger_seconds=3600)
    first = await held.acquire()
    held.done()
    again = await held.acquire()
    assert again is first
    assert await again.fetchval("SELECT 1") == 1
    held.done()
    await held.release()
    assert await held.acquire() is not first  # a fresh proxy: the pool had it back
    await held.release()


async def test_an_unused_connection_goes_back_to_the_pool_after_its_linger(
    pool: asyncpg.Pool,
) -> None:
    idle = pool.get_idle_size()
    held = HeldConnection(pool, linger_seconds=0)
    conn = await held.acquire()
    await conn.execute("SELECT 1")
    held.done()
    await _until_idle(pool, idle)
    # Given back through the pool: its reset ran, its proxy is closed to us.
    with pytest.raises(asyncpg.InterfaceError):
        await conn.execute("SELECT 1")


async def test_a_use_between_the_linger_and_the_release_takes_another_connection(
    pool: asyncpg.Pool,
) -> None:
    """The linger's timer has fired but its release has not run yet: a use that comes in
    that moment must not be handed the connection the pool is about to reset."""
    held = HeldConnection(pool, linger_seconds=0)
    first = await held.acquire()
    held.done()
    timer = held._timer
    assert timer is not None
    timer.cancel()
    held._release_later()  # the timer's callback, without a turn of the loop after it
    taken = await held.acquire()
    assert taken is not first
    # The release of the first runs meanwhile; the new use is not disturbed by it.
    for _ in range(20):
        assert await taken.fetchval("SELECT 1") == 1
        await asyncio.sleep(0)
    await held.release()
