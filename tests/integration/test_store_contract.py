"""The PostgreSQL event store keeps the event log's contract (``tests/support/store_contract``),
and its own chain check agrees with the one over envelopes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from bench.support import migrated_database
from service.domain.ids import new_key_id
from service.store.audit_chain import verify_chain, walk_chain
from service.store.event_log import EventLog, PostgresEventLog
from tests.support.store_contract import ACTOR, EventLogContract, generated, later


@pytest.fixture
async def log_pool(postgres_server_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A database of its own per test: the contract reasons about the whole log."""
    async with migrated_database(postgres_server_url) as (_, pool):
        yield pool


class TestPostgresEventLog(EventLogContract):
    @pytest.fixture
    def event_log(self, log_pool: asyncpg.Pool) -> EventLog:
        return PostgresEventLog(log_pool)


async def test_the_database_chain_check_agrees(log_pool: asyncpg.Pool) -> None:
    log = PostgresEventLog(log_pool)
    for _ in range(3):
        key_id = new_key_id()
        await log.append([generated(key_id)], actor=ACTOR, expected_version=0)
        await log.append([later(key_id, 1), later(key_id, 2)], actor=ACTOR, expected_version=1)
    async with log_pool.acquire() as conn:
        stored = await verify_chain(conn)
    assert stored.ok and stored == walk_chain(await log.read_after(0))
    assert stored.events == 9
