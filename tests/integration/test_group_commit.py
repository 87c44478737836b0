"""The group commit (docs/security.md §3): one command's failure of any kind fails it alone.

The handler is called directly, so commands the HTTP schemas refuse can be
sent anyway: the group commit must hold whatever reaches it.
"""

from __future__ import annotations

import asyncio
import io
import json
import secrets
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest

from events.models import Actor
from service import command_session, key_commands
from service.clock import utc_now
from service.domain import key_material
from service.domain.commands import Command, GenerateKey, RenameKey, RevokeKey
from service.domain.ids import new_key_id
from service.errors import KeyledgerError
from service.key_commands import CommandOutcome, IdempotentRequest, KeyCommandHandler
from service.key_view import render_key
from service.store.audit_chain import verify_chain
from tests.support.api import Api, new_org
from tests.support.event_log import append_lock_held, writers_waiting_for_lock

ACTOR = Actor(id="test:group-commit")
Outcome = CommandOutcome | BaseException


def generate(org_id: str, key_id: str | None = None, **fields: Any) -> GenerateKey:
    return GenerateKey(
        key_id=key_id or new_key_id(),
        org_id=org_id,
        name=fields.pop("name", "group commit"),
        type="secret",
        environment="live",
        issued_at=fields.pop("issued_at", utc_now()),
        secret_hash=secrets.token_hex(32),
        hint="sk_live_0000…0000",
        **fields,
    )


class BatchSizes:
    """Records the size of every batch a handler writes."""

    def __init__(self, handler: KeyCommandHandler, monkeypatch: pytest.MonkeyPatch) -> None:
        self.sizes: list[int] = []
        write = handler.write

        async def recording_write(conn: asyncpg.Connection, requests: Sequence[Any]) -> Any:
            self.sizes.append(len(requests))
            return await write(conn, requests)

        monkeypatch.setattr(handler, "write", recording_write)


async def run_all(
    handler: KeyCommandHandler, commands: Sequence[tuple[Command, str]], **options: Any
) -> list[Outcome]:
    """Submit every command at once (one batch) and gather outcome or error for each."""
    return await asyncio.gather(
        *(
            handler.handle(command, org_id=org_id, actor=ACTOR, **options)
            for command, org_id in commands
        ),
        return_exceptions=True,
    )


async def assert_log_sound(pool: asyncpg.Pool, outcomes: Sequence[Outcome]) -> list[int]:
    """Every successful outcome's events are stored where it says, the log has no
    hole and its whole chain verifies; returns the outcomes' positions in order."""
    envelopes = [e for o in outcomes if isinstance(o, CommandOutcome) for e in o.events]
    for envelope in envelopes:
        row = await pool.fetchrow(
            "SELECT event_id, hash FROM events WHERE position = $1", envelope.position
        )
        assert row is not None and row["event_id"] == envelope.event_id
        assert row["hash"].strip() == envelope.hash
    count, top = await pool.fetchrow("SELECT count(*), max(position) FROM events")
    assert count == top
    async with pool.acquire() as conn:
        report = await verify_chain(conn)
    assert report.ok, report
    return sorted(e.position for e in envelopes)


async def assert_not_written(pool: asyncpg.Pool, key_id: str) -> None:
    assert await pool.fetchval("SELECT count(*) FROM events WHERE key_id = $1", key_id) == 0
    assert await pool.fetchval("SELECT count(*) FROM key_registry WHERE key_id = $1", key_id) == 0


def code_of(outcome: Outcome) -> str:
    assert isinstance(outcome, KeyledgerError), outcome
    return outcome.code


async def test_poison_commands_fail_alone_in_a_burst(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch, captured_logs: io.StringIO
) -> None:
    handler = KeyCommandHandler(pool, max_active_keys=1000)
    sizes = BatchSizes(handler, monkeypatch)
    existing = generate(new_org())
    await handler.handle(existing, org_id=existing.org_id, actor=ACTOR)
    to_revoke = generate(new_org())
    await handler.handle(to_revoke, org_id=to_revoke.org_id, actor=ACTOR)

    # A bug after the command's events are appended in memory: the batch must drop
    # them, and the log head with them.
    exploding = new_key_id()
    nearby_secret = key_material.new_secret("secret", "live")

    def render_or_explode(state: Any, at: Any) -> dict[str, Any]:
        if state.key_id == exploding:
            raise RuntimeError(f"a bug in one command, near {nearby_secret}")
        return render_key(state, at)

    monkeypatch.setattr(command_session, "render_key", render_or_explode)

    # index in the burst -> (command, org, the code its caller gets)
    poison: dict[int, tuple[Command, str, str]] = {}
    orgs = [new_org() for _ in range(7)]
    surrogate = {"note": "lone \ud800 surrogate"}
    poison[2] = (generate(orgs[0], metadata=surrogate), orgs[0], "validation_error")
    duplicate = generate(existing.org_id, key_id=existing.key_id)  # unique (key, version)
    poison[5] = (duplicate, existing.org_id, "version_mismatch")
    poison[9] = (generate("nul\x00org"), "nul\x00org", "validation_error")  # text refuses NUL
    poison[13] = (generate(orgs[1], key_id=exploding), orgs[1], "unavailable")
    poison[17] = (generate(orgs[2], name="bad \udfff name"), orgs[2], "validation_error")
    unknown = RenameKey(key_id=new_key_id(), name="x", issued_at=utc_now())
    poison[21] = (unknown, orgs[3], "key_not_found")
    origins = ("https://\udc00.example",)
    poison[25] = (generate(orgs[4], allowed_origins=origins), orgs[4], "validation_error")

    commands: list[tuple[Command, str]] = []
    for index in range(32):
        if index in poison:
            commands.append(poison[index][:2])
        elif index == 28:
            revoke = RevokeKey(key_id=to_revoke.key_id, reason="leaked", issued_at=utc_now())
            commands.append((revoke, to_revoke.org_id))
        else:
            org = new_org()
            commands.append((generate(org), org))

    sizes.sizes.clear()
    logged_before = len(captured_logs.getvalue())
    outcomes = await run_all(handler, commands)

    # One transaction for all: the poison was refused in memory, before anything was
    # written, and did not make the batch fail and be retried.
    assert sizes.sizes == [32]
    for index, outcome in enumerate(outcomes):
        if index in poison:
            assert code_of(outcome) == poison[index][2], index
        else:
            assert isinstance(outcome, CommandOutcome), (index, outcome)
            assert len(outcome.events) == 1
    positions = await assert_log_sound(pool, outcomes)
    # One transaction: the failed commands' positions were taken by the next ones.
    assert positions == list(range(positions[0], positions[0] + 32 - len(poison)))
    for command, _, _ in poison.values():
        if isinstance(command, GenerateKey) and command is not duplicate:
            await assert_not_written(pool, command.key_id)
    assert (
        await pool.fetchval("SELECT status FROM key_registry WHERE key_id = $1", to_revoke.key_id)
        == "revoked"
    )
    # The unexpected failure is logged with its traceback, and without the secret.
    lines = [json.loads(line) for line in captured_logs.getvalue()[logged_before:].splitlines()]
    [failed] = [line for line in lines if line.get("event") == "command_failed"]
    assert "Traceback" in failed["exception"] and "a bug in one command" in failed["exception"]
    assert nearby_secret not in captured_logs.getvalue()
    unstorable = [line for line in lines if line.get("event") == "command_unstorable"]
    assert len(unstorable) == 4 and "surrogate" not in json.dumps(unstorable)


async def test_a_failed_command_leaves_no_idempotency_record(pool: asyncpg.Pool) -> None:
    handler = KeyCommandHandler(pool, max_active_keys=1000)
    org = new_org()
    poisoned = generate(org, metadata={"x": "\udc80"})
    normal = generate(org)
    request = IdempotentRequest("retry-me", "f" * 64)
    outcomes = await asyncio.gather(
        handler.handle(poisoned, org_id=org, actor=ACTOR, idempotent=request),
        handler.handle(normal, org_id=org, actor=ACTOR),
        return_exceptions=True,
    )
    assert code_of(outcomes[0]) == "validation_error"
    assert isinstance(outcomes[1], CommandOutcome)
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM idempotency_keys WHERE caller_key_id = $1", ACTOR.id
        )
        == 0
    )
    # The same Idempotency-Key with a sound command is free, not a replay of a failure.
    fixed = generate(org)
    outcome = await handler.handle(fixed, org_id=org, actor=ACTOR, idempotent=request)
    assert not outcome.replayed and len(outcome.events) == 1


async def test_a_batch_that_fails_whole_is_retried_command_by_command(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = KeyCommandHandler(pool, max_active_keys=1000)
    sizes = BatchSizes(handler, monkeypatch)
    write_batch = key_commands.write_batch
    killed: list[int] = []

    async def lose_connection_then_write(conn: asyncpg.Connection, *args: Any) -> None:
        if not killed:
            # The connection dies mid-batch, after everything was read under the lock.
            killed.append(conn.get_server_pid())
            await pool.execute("SELECT pg_terminate_backend($1)", killed[0])
        await write_batch(conn, *args)

    monkeypatch.setattr(key_commands, "write_batch", lose_connection_then_write)
    orgs = [new_org() for _ in range(6)]
    commands = [(generate(org), org) for org in orgs]
    commands.append((generate(orgs[0], metadata={"bad": "\ud800"}), orgs[0]))
    outcomes = await run_all(handler, commands)

    assert killed and sizes.sizes[0] == len(commands)
    assert sizes.sizes[1:] == [1] * len(commands)  # then each alone
    assert all(isinstance(o, CommandOutcome) for o in outcomes[:-1]), outcomes
    assert code_of(outcomes[-1]) == "validation_error"
    await assert_log_sound(pool, outcomes)
    for command, _ in commands:  # nothing of the lost batch survived, nothing twice
        count = await pool.fetchval("SELECT count(*) FROM events WHERE key_id = $1", command.key_id)
        assert count == (0 if command is commands[-1][0] else 1)


async def test_an_outage_during_the_retry_fails_the_rest_at_once(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = KeyCommandHandler(pool, max_active_keys=1000)
    sizes = BatchSizes(handler, monkeypatch)
    write_batch = key_commands.write_batch
    calls: list[int] = []

    async def write_failing(conn: asyncpg.Connection, *args: Any) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the batch fails as a whole")
        if len(calls) == 2:
            raise ConnectionResetError("the database went away")
        await write_batch(conn, *args)

    monkeypatch.setattr(key_commands, "write_batch", write_failing)
    orgs = [new_org() for _ in range(5)]
    outcomes = await run_all(handler, [(generate(org), org) for org in orgs])
    # The whole batch, then the first command alone; the rest were not tried.
    assert sizes.sizes == [5, 1]
    assert [code_of(o) for o in outcomes] == ["unavailable"] * 5
    assert all(o.details == {"retry_after": 1} for o in outcomes)
    assert await pool.fetchval("SELECT count(*) FROM events WHERE org_id = ANY($1)", orgs) == 0
    org = new_org()
    assert len((await handler.handle(generate(org), org_id=org, actor=ACTOR)).events) == 1


async def test_a_cancelled_caller_commits_fully_or_not_at_all(pool: asyncpg.Pool) -> None:
    handler = KeyCommandHandler(pool, max_active_keys=1000)
    orgs = [new_org() for _ in range(5)]
    commands = [generate(org) for org in orgs]
    late_org = new_org()
    late = generate(late_org)
    async with append_lock_held(pool):
        tasks = [
            asyncio.create_task(handler.handle(c, org_id=c.org_id, actor=ACTOR)) for c in commands
        ]
        await writers_waiting_for_lock(pool)  # the writer holds these five in its batch
        late_task = asyncio.create_task(handler.handle(late, org_id=late_org, actor=ACTOR))
        await asyncio.sleep(0)  # queued behind the batch
        tasks[2].cancel()
        late_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await tasks[2]
        with pytest.raises(asyncio.CancelledError):
            await late_task
    outcomes = await asyncio.gather(*(t for i, t in enumerate(tasks) if i != 2))
    assert all(len(o.events) == 1 for o in outcomes)
    # Taken into the batch: all of it (event and registry row) or none of it.
    cancelled = commands[2].key_id
    events = await pool.fetchval("SELECT count(*) FROM events WHERE key_id = $1", cancelled)
    rows = await pool.fetchval("SELECT count(*) FROM key_registry WHERE key_id = $1", cancelled)
    assert (events, rows) in {(0, 0), (1, 1)}
    # The writer goes on; it takes commands in order, so by the time this one is
    # answered the late one would have been written, had it been kept.
    org = new_org()
    assert len((await handler.handle(generate(org), org_id=org, actor=ACTOR)).events) == 1
    # Not yet taken when its caller left: never written.
    await assert_not_written(pool, late.key_id)
    async with pool.acquire() as conn:
        assert (await verify_chain(conn)).ok


async def test_the_writer_never_strands_a_caller(
    pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = KeyCommandHandler(pool, max_active_keys=1000)
    group = handler._group
    write_batch = group._write_batch
    failures = [RuntimeError("a bug in the writer")]

    async def broken_once(batch: Any) -> None:
        if failures:
            group._take(batch)  # the batch is chosen, then the writer fails
            raise failures.pop()
        await write_batch(batch)

    monkeypatch.setattr(group, "_write_batch", broken_once)
    orgs = [new_org() for _ in range(3)]
    outcomes = await run_all(handler, [(generate(org), org) for org in orgs])
    assert [code_of(o) for o in outcomes] == ["unavailable"] * 3
    org = new_org()
    assert len((await handler.handle(generate(org), org_id=org, actor=ACTOR)).events) == 1

    # The writer task itself cancelled (e.g. at shutdown) while callers wait.
    async with append_lock_held(pool):
        orgs = [new_org() for _ in range(3)]
        tasks = [
            asyncio.create_task(handler.handle(generate(o), org_id=o, actor=ACTOR)) for o in orgs
        ]
        await writers_waiting_for_lock(pool)
        queued = asyncio.create_task(handler.handle(generate(org), org_id=org, actor=ACTOR))
        await asyncio.sleep(0)
        assert group._writer is not None
        group._writer.cancel()
        outcomes = await asyncio.gather(*tasks, queued, return_exceptions=True)
    assert [code_of(o) for o in outcomes] == ["unavailable"] * 4
    assert await pool.fetchval("SELECT count(*) FROM events WHERE org_id = ANY($1)", orgs) == 0
    org = new_org()
    assert len((await handler.handle(generate(org), org_id=org, actor=ACTOR)).events) == 1


async def test_a_held_append_lock_gives_a_clean_503(pool: asyncpg.Pool) -> None:
    handler = KeyCommandHandler(pool, max_active_keys=1000, lock_timeout_seconds=0.2)
    orgs = [new_org() for _ in range(3)]
    commands = [generate(org) for org in orgs]
    async with append_lock_held(pool):
        outcomes = await run_all(handler, [(c, c.org_id) for c in commands])
        assert [code_of(o) for o in outcomes] == ["unavailable"] * 3
        assert all(o.details == {"retry_after": 1} for o in outcomes)
    for command in commands:
        await assert_not_written(pool, command.key_id)
    # Released: the same commands go through.
    outcomes = await run_all(handler, [(c, c.org_id) for c in commands])
    assert all(len(o.events) == 1 for o in outcomes)
    await assert_log_sound(pool, outcomes)


async def test_a_stuck_statement_is_bounded_by_the_command_timeout(
    pool: asyncpg.Pool, database_url: str
) -> None:
    setup = KeyCommandHandler(pool, max_active_keys=1000)
    org = new_org()
    key = generate(org)
    await setup.handle(key, org_id=org, actor=ACTOR)
    quick = await asyncpg.create_pool(database_url, min_size=1, max_size=2, command_timeout=0.3)
    try:
        handler = KeyCommandHandler(quick, max_active_keys=1000, lock_timeout_seconds=30)
        revoke = RevokeKey(key_id=key.key_id, reason="leaked", issued_at=utc_now())
        async with pool.acquire() as blocker, blocker.transaction():
            # Another transaction holds the key's registry row: the revoke's update waits.
            await blocker.execute(
                "SELECT 1 FROM key_registry WHERE key_id = $1 FOR UPDATE", key.key_id
            )
            other = new_org()
            outcomes = await run_all(handler, [(revoke, org), (generate(other), other)])
            assert [code_of(o) for o in outcomes] == ["unavailable"] * 2
        assert (
            await pool.fetchval("SELECT count(*) FROM events WHERE key_id = $1", key.key_id) == 1
        )  # only its KeyGenerated
        outcome = await handler.handle(revoke, org_id=org, actor=ACTOR)
        assert outcome.state is not None and outcome.state.status == "revoked"
    finally:
        await quick.close()


async def test_over_http_a_poison_request_does_not_fail_its_neighbours(api: Api) -> None:
    orgs = [new_org() for _ in range(24)]
    poison = {
        3: {"metadata": {"note": "\ud800"}},
        11: {"name": "lone \udfff"},
        19: {"metadata": {"deep": {"er": ["\udc00"]}}},
    }
    answers = await asyncio.gather(
        *(
            api.post(f"/v1/orgs/{org}/keys", {"name": "k", "type": "secret", **poison.get(i, {})})
            for i, org in enumerate(orgs)
        )
    )
    for index, (status, _, body) in enumerate(answers):
        if index in poison:
            # Refused by the schema or, failing that, alone in the group commit.
            assert (status, body["error"]["code"]) == (422, "validation_error"), index
        else:
            assert status == 201, (index, body)
