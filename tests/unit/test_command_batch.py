"""The batch planner (service.command_batch): a batch decided in memory, in order, no I/O.

Given what the batch read (a snapshot), when its commands are planned, then
each sees the ones before it, and one that fails leaves nothing in the plan.
"""

from __future__ import annotations

import secrets
from datetime import UTC, datetime
from typing import Any

import pytest

from events.codec import GENESIS_HASH
from events.models import Actor
from service.command_batch import BatchPlan, BatchReads, BatchSnapshot, plan_batch
from service.command_session import CommandOutcome, CommandRequest, IdempotentRequest
from service.domain.commands import EnableKey, GenerateKey, RenameKey
from service.domain.ids import new_key_id
from service.domain.orgs import SYSTEM_ORG
from service.errors import KeyledgerError
from service.store.audit_chain import walk_chain
from service.store.event_rows import UnfoldableStream, UnstorableValue
from service.store.event_store import LogHead

AT = datetime(2026, 1, 1, tzinfo=UTC)
ACTOR = Actor(id="test:batch")


def generate(org_id: str = "acme", key_id: str | None = None, **fields: Any) -> CommandRequest:
    idempotent = fields.pop("idempotent", None)
    command = GenerateKey(
        key_id=key_id or new_key_id(),
        org_id=org_id,
        name=fields.pop("name", "k"),
        type="secret",
        environment="live",
        issued_at=AT,
        secret_hash=secrets.token_hex(32),
        hint="sk_live_0000…0000",
        **fields,
    )
    return CommandRequest(command, org_id, ACTOR, idempotent=idempotent)


def snapshot(head: int = 41, **read: Any) -> BatchSnapshot:
    # Only a head of 0 has the genesis hash; elsewhere it stands for any hash.
    return BatchSnapshot(head=LogHead(head, GENESIS_HASH), now=AT, **read)


async def plan(requests: list[CommandRequest], read: BatchSnapshot, quota: int = 10) -> BatchPlan:
    return await plan_batch(requests, read, max_active_keys=quota)


def codes(done: BatchPlan) -> list[str]:
    return [o.code if isinstance(o, KeyledgerError) else "ok" for o in done.outcomes]


async def test_events_continue_the_head_with_one_chain() -> None:
    read = snapshot(counts={("acme", "live", AT): 0})
    done = await plan([generate() for _ in range(5)], read)
    assert codes(done) == ["ok"] * 5
    assert [e.position for e in done.events] == [42, 43, 44, 45, 46]
    assert done.events[0].hash != GENESIS_HASH
    first = await plan([generate() for _ in range(5)], snapshot(0, counts=read.counts))
    assert walk_chain(first.events).ok
    assert set(done.registry) == {e.key_id for e in done.events}


async def test_the_active_key_limit_counts_the_commands_before() -> None:
    read = snapshot(counts={("acme", "live", AT): 1, ("other", "live", AT): 0})
    done = await plan([generate(), generate("other"), generate(), generate()], read, quota=3)
    assert codes(done) == ["ok", "ok", "ok", "active_key_limit"]


async def test_the_same_idempotency_key_twice_replays_the_first() -> None:
    request = IdempotentRequest("once", "f" * 64)
    read = snapshot(counts={("acme", "live", AT): 0})
    done = await plan([generate(idempotent=request), generate(idempotent=request)], read)
    first, second = done.outcomes
    assert isinstance(first, CommandOutcome) and isinstance(second, CommandOutcome)
    assert second.replayed and (second.key, second.position) == (first.key, first.position)
    assert len(done.events) == 1 and list(done.remembered) == [(ACTOR.id, "once")]


async def test_a_failed_command_leaves_nothing_and_its_neighbours_go_on() -> None:
    taken = new_key_id()
    requests = [
        generate(),
        generate(metadata={"note": "lone \ud800"}),  # cannot be hashed or stored
        generate("nul\x00org"),  # text columns refuse NUL
        generate(key_id=taken),  # its stream already has a version 1
        CommandRequest(RenameKey(key_id=new_key_id(), name="x", issued_at=AT), "acme", ACTOR),
        generate(),
    ]
    read = snapshot(counts={("acme", "live", AT): 0}, taken=frozenset({taken}))
    done = await plan(requests, read)
    assert codes(done)[0] == "ok" and codes(done)[-1] == "ok"
    assert isinstance(done.outcomes[1], UnicodeError)
    assert isinstance(done.outcomes[2], UnstorableValue)
    assert codes(done)[3:5] == ["version_mismatch", "key_not_found"]
    assert [e.position for e in done.events] == [42, 43]
    assert done.events[1].key_id == requests[-1].command.key_id


async def test_an_unfoldable_stream_refuses_its_command_alone() -> None:
    key_id = new_key_id()
    unfoldable = UnfoldableStream(key_id, "acme", 7, "KeyGenerated")
    rename = CommandRequest(RenameKey(key_id=key_id, name="x", issued_at=AT), "acme", ACTOR)
    read = snapshot(counts={("acme", "live", AT): 0}, streams={key_id: unfoldable})
    done = await plan([rename, generate()], read)
    assert codes(done) == ["key_quarantined", "ok"]


async def test_a_count_the_batch_did_not_read_fails_the_command_not_the_quota() -> None:
    # Never a silent zero: the command fails (503) rather than pass the limit.
    done = await plan([generate()], snapshot())
    assert isinstance(done.outcomes[0], RuntimeError) and not done.events


def test_reads_name_every_lookup_once() -> None:
    request = IdempotentRequest("k", "f" * 64)
    key_id = new_key_id()
    requests = [
        generate(idempotent=request),
        generate(idempotent=request),
        generate(SYSTEM_ORG),
        CommandRequest(EnableKey(key_id=key_id, issued_at=AT), "acme", ACTOR),
        generate("nul\x00org"),
    ]
    reads = BatchReads.of(requests)
    # Streams only of existing keys; a new key id is only checked for being taken.
    assert reads.key_ids == [key_id] and len(reads.new_key_ids) == 4
    # The system org has no limit; an enable counts both environments; NUL is never sent.
    assert reads.counts == [("acme", "live", AT), ("acme", "test", AT)]
    assert reads.outcomes == [(ACTOR.id, "k")]


@pytest.mark.parametrize("quota", [1, 2])
async def test_generated_in_system_org_have_no_limit(quota: int) -> None:
    done = await plan([generate(SYSTEM_ORG) for _ in range(3)], snapshot(), quota=quota)
    assert codes(done) == ["ok"] * 3
