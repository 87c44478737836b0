"""The in-memory event log keeps the event log's contract; its registry and idempotency
memory answer as the PostgreSQL ones do. No database."""

from __future__ import annotations

from datetime import timedelta

import pytest

from events.codec import seal
from events.models import Envelope
from service.clock import utc_now
from service.domain.decider import fold
from service.domain.ids import new_key_id
from service.store.audit_chain import walk_chain
from service.store.event_log import EventLog
from service.store.idempotency import StoredOutcome
from service.store.in_memory import InMemoryEventLog, InMemoryIdempotency, InMemoryKeyRegistry
from tests.support.store_contract import ACTOR, EventLogContract, generated, later


class TestInMemoryEventLog(EventLogContract):
    @pytest.fixture
    def event_log(self) -> EventLog:
        return InMemoryEventLog()


async def logged(count: int) -> list[Envelope]:
    log = InMemoryEventLog()
    key_id = new_key_id()
    await log.append([generated(key_id)], actor=ACTOR, expected_version=0)
    for step in range(1, count):
        await log.append([later(key_id, step)], actor=ACTOR, expected_version=step)
    return await log.read_after(0)


@pytest.mark.parametrize(
    ("tamper", "broken_at"),
    [
        (lambda log: log[:1] + log[2:], 2),  # a hole
        (lambda log: log[1:], 1),  # the start cut off
        (lambda log: [log[0], log[2], log[1], *log[3:]], 2),  # reordered
        (lambda log: [log[0], log[1].model_copy(update={"data": {}}), *log[2:]], 2),  # edited
        (lambda log: [*log[:3], log[3].model_copy(update={"hash": "0" * 64})], 4),  # resealed
    ],
)
async def test_walk_chain_finds_each_kind_of_break(tamper, broken_at: int) -> None:
    log = await logged(4)
    assert walk_chain(log).ok
    report = walk_chain(tamper(log))
    assert not report.ok and report.broken_at == broken_at and report.events == broken_at - 1


async def test_a_forged_event_sealed_on_another_chain_breaks_it() -> None:
    log = await logged(3)
    forged = seal(
        later(log[0].key_id, 9),
        event_id=log[2].event_id,
        stream_version=3,
        position=3,
        actor=ACTOR,
        previous_hash="f" * 64,
    )
    assert walk_chain([*log[:2], forged]).broken_at == 3


async def test_the_registry_counts_active_slots_and_finds_secrets() -> None:
    registry = InMemoryKeyRegistry()
    now = utc_now()
    disabled = new_key_id()
    states = {
        "live": fold([generated(new_key_id(), expires_at=None)]),
        "expired": fold([generated(new_key_id(), expires_at=now - timedelta(seconds=1))]),
        "test env": fold([generated(new_key_id(), environment="test", expires_at=None)]),
        "other org": fold([generated(new_key_id(), org_id="other", expires_at=None)]),
        "disabled": fold(
            [generated(disabled, secret_hash="b" * 64, expires_at=None), later(disabled, 1)]
        ),
    }
    for state in states.values():
        assert state is not None
        await registry.save(state)
    assert await registry.count_active("acme", "live", now) == 1
    assert await registry.count_active("acme", "test", now) == 1
    assert await registry.count_active("other", "live", now) == 1
    assert await registry.count_active("nobody", "live", now) == 0
    assert await registry.find_by_secret_hash("b" * 64, now) is not None
    assert await registry.find_by_secret_hash("c" * 64, now) is None
    expired = states["expired"]
    assert expired is not None
    assert await registry.due_for_expiry(now) == [(expired.key_id, "acme")]
    # Tenant keys have no standing as service keys.
    assert await registry.standings([s.key_id for s in states.values() if s]) == {}


async def test_idempotency_outcomes_last_their_ttl() -> None:
    now = utc_now()
    clock = [now]
    memory = InMemoryIdempotency(24, clock=lambda: clock[0])
    outcome = StoredOutcome("fingerprint", True, {"id": "k"}, 3)
    await memory.remember("caller", "retry-1", outcome)
    assert await memory.find("caller", "retry-1") == outcome
    assert await memory.find("other caller", "retry-1") is None
    assert await memory.find("caller", "retry-2") is None
    clock[0] = now + timedelta(hours=24)
    assert await memory.find("caller", "retry-1") is None
