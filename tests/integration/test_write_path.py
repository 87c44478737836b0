"""The write path at scale: a batch costs a constant number of round trips, and the
queue of commands is bounded (503 ``overloaded`` with Retry-After, nothing written)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import asyncpg
import pytest

from events.models import Actor
from service.clock import utc_now
from service.command_session import CommandRequest
from service.domain.commands import RenameKey
from service.errors import KeyledgerError
from service.http.errors import error_response
from service.key_commands import IdempotentRequest, KeyCommandHandler
from service.store.audit_chain import verify_chain
from tests.integration.test_group_commit import (
    BatchSizes,
    assert_log_sound,
    assert_not_written,
    code_of,
    generate,
    run_all,
)
from tests.support.api import new_org
from tests.support.event_log import append_lock_held, writers_waiting_for_lock

ACTOR = Actor(id="test:write-path")
_QUERIES = ("execute", "fetch", "fetchrow", "fetchval")


class CountingConnection:
    """A connection that counts the statements sent through it (each one round trip)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn
        self.statements = 0

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.conn, name)
        if name not in _QUERIES:
            return attribute

        async def counted(*args: Any, **kwargs: Any) -> Any:
            self.statements += 1
            return await attribute(*args, **kwargs)

        return counted


async def statements_for(
    handler: KeyCommandHandler, pool: asyncpg.Pool, size: int, *, renames: bool
) -> int:
    """Round trips of one batch of ``size`` GenerateKeys, half with an Idempotency-Key,
    and with ``renames``, as many RenameKeys of existing keys."""
    requests = []
    for number in range(size):
        org = new_org()
        idempotent = IdempotentRequest(f"rt-{org}", "f" * 64) if number % 2 else None
        requests.append(CommandRequest(generate(org), org, ACTOR, idempotent=idempotent))
        if renames:
            existing = generate(org)
            await handler.handle(existing, org_id=org, actor=ACTOR)
            rename = RenameKey(key_id=existing.key_id, name="renamed", issued_at=utc_now())
            requests.append(CommandRequest(rename, org, ACTOR))
    async with pool.acquire() as conn:
        counting = CountingConnection(conn)
        # As the group commit sends them.
        await counting.execute(f"BEGIN; {handler.opening}")
        outcomes = await handler.write(counting, requests)  # type: ignore[arg-type]
        await counting.execute("COMMIT")
    assert all(not isinstance(o, Exception) for o in outcomes), outcomes
    return counting.statements


async def test_a_batch_costs_the_same_round_trips_whatever_its_size(pool: asyncpg.Pool) -> None:
    handler = KeyCommandHandler(pool, max_active_keys=1000, lock_timeout_seconds=5)
    # BEGIN with the lock (before the batch is chosen); one read (head, taken key ids,
    # counts, idempotency, callers); one write (events, registry, idempotency, NOTIFY);
    # COMMIT.
    for size in (1, 2, 64):
        assert await statements_for(handler, pool, size, renames=False) == 4
    # With commands on existing keys, one more read: their streams.
    for size in (1, 32):
        assert await statements_for(handler, pool, size, renames=True) == 5
    async with pool.acquire() as conn:
        assert (await verify_chain(conn)).ok


async def test_a_full_queue_refuses_at_once_and_writes_nothing(pool: asyncpg.Pool) -> None:
    handler = KeyCommandHandler(pool, max_active_keys=1000, max_waiting=3)
    orgs = [new_org() for _ in range(4)]
    async with append_lock_held(pool):
        queued = [
            asyncio.create_task(handler.handle(generate(org), org_id=org, actor=ACTOR))
            for org in orgs[:3]
        ]
        await writers_waiting_for_lock(pool)  # the writer waits for the lock; 3 wait for it
        refused = generate(orgs[3])
        with pytest.raises(KeyledgerError) as overloaded:
            await handler.handle(refused, org_id=orgs[3], actor=ACTOR)
        assert overloaded.value.code == "overloaded"
        retry_after = overloaded.value.details["retry_after"]
        assert isinstance(retry_after, int) and 1 <= retry_after <= 30
    # The lock free, the three waiting are written in one batch.
    outcomes = await asyncio.gather(*queued)
    assert all(len(o.events) == 1 for o in outcomes)
    assert len({o.position for o in outcomes}) == 3
    assert await pool.fetchval("SELECT count(*) FROM events WHERE org_id = $1", orgs[3]) == 0
    # Drained: the queue takes commands again.
    assert len((await handler.handle(refused, org_id=orgs[3], actor=ACTOR)).events) == 1


async def test_commands_that_come_while_the_lock_is_held_join_one_batch(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = KeyCommandHandler(pool, max_active_keys=1000)
    sizes = BatchSizes(handler, monkeypatch)
    orgs = [new_org() for _ in range(6)]
    async with append_lock_held(pool):  # another replica's batch
        first = asyncio.create_task(handler.handle(generate(orgs[0]), org_id=orgs[0], actor=ACTOR))
        await writers_waiting_for_lock(pool)
        later = [
            asyncio.create_task(handler.handle(generate(org), org_id=org, actor=ACTOR))
            for org in orgs[1:]
        ]
        await asyncio.sleep(0)
    outcomes = await asyncio.gather(first, *later)
    assert all(len(o.events) == 1 for o in outcomes)
    # Chosen once the lock was held: the one that started the wait and all that came during it.
    assert sizes.sizes == [6]


async def test_a_write_no_check_foresaw_fails_its_command_alone(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = KeyCommandHandler(pool, max_active_keys=1000)
    sizes = BatchSizes(handler, monkeypatch)
    commands = [generate(new_org()) for _ in range(4)]
    # The registry holds each secret hash once: the batch's one write statement fails.
    commands[2] = dataclasses.replace(commands[2], secret_hash=commands[1].secret_hash)
    outcomes = await run_all(handler, [(c, c.org_id) for c in commands])
    # The batch, then each command in a transaction of its own.
    assert sizes.sizes == [4, 1, 1, 1, 1]
    assert [code_of(o) for o in outcomes if isinstance(o, KeyledgerError)] == ["unavailable"]
    assert isinstance(outcomes[2], KeyledgerError)
    await assert_log_sound(pool, outcomes)
    await assert_not_written(pool, commands[2].key_id)


def test_overloaded_is_a_503_with_retry_after() -> None:
    response = error_response("overloaded", "busy", "req-1", {"retry_after": 4})
    assert response.status == 503 and response.headers["Retry-After"] == "4"
