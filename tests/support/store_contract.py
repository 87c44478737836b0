"""The event log's contract as one reusable test case (``service.store.event_log``).

A test module subclasses ``EventLogContract`` and provides an ``event_log``
fixture: an empty log of the implementation under test. Every test here then
runs against it, so PostgreSQL and the in-memory log are held to one standard
(the ``eventsourcing`` library's recorder tests work the same way)::

    class TestInMemoryEventLog(EventLogContract):
        @pytest.fixture
        def event_log(self) -> EventLog:
            return InMemoryEventLog()
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events.codec import GENESIS_HASH, chain_hash, decode, envelope_body, envelope_to_json
from events.codec import to_domain_event as domain_event_of
from events.models import (
    Actor,
    DomainEvent,
    KeyDisabled,
    KeyEnabled,
    KeyGenerated,
    KeyRenamed,
    KeyRevoked,
    RateLimit,
)
from service.domain.ids import new_key_id
from service.errors import KeyledgerError
from service.store.audit_chain import walk_chain
from service.store.event_log import EventLog

ACTOR = Actor(id="test:contract", on_behalf_of="acme-admin", request_id="req-1")
# Microseconds, as PostgreSQL keeps them: a round trip must give back the same instant.
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def generated(key_id: str, org_id: str = "acme", **fields: Any) -> KeyGenerated:
    """A ``KeyGenerated`` with a little of everything an event can carry."""
    values: dict[str, Any] = {
        "name": "billing bot — ünïcode",
        "type": "secret",
        "environment": "live",
        "scopes": ("keys:read", "b:*"),
        "secret_hash": "a" * 64,
        "hint": "abcd",
        "metadata": {"team": "billing", "nested": {"list": [1, 2.5, None, True]}},
        "rate_limit": RateLimit(limit=10, window="1m"),
        "expires_at": T0 + timedelta(days=30),
    }
    values.update(fields)
    return KeyGenerated(key_id=key_id, org_id=org_id, occurred_at=T0, **values)


def later(key_id: str, step: int, org_id: str = "acme") -> DomainEvent:
    """The ``step``-th event after a key's ``KeyGenerated`` (any mix of types will do)."""
    at = T0 + timedelta(seconds=step)
    kinds: list[DomainEvent] = [
        KeyRenamed(
            key_id=key_id, org_id=org_id, occurred_at=at, name=f"n{step}", previous_name="p"
        ),
        KeyDisabled(key_id=key_id, org_id=org_id, occurred_at=at, reason="paused"),
        KeyEnabled(key_id=key_id, org_id=org_id, occurred_at=at),
    ]
    return kinds[step % len(kinds)]


async def refused(call: Any) -> KeyledgerError:
    with pytest.raises(KeyledgerError) as refusal:
        await call
    assert refusal.value.code == "version_mismatch", refusal.value
    return refusal.value


class EventLogContract:
    """What every ``EventLog`` must do; subclasses provide the ``event_log`` fixture."""

    @pytest.fixture
    def event_log(self) -> EventLog:
        raise NotImplementedError("a subclass provides an empty log of its implementation")

    async def test_an_empty_log(self, event_log: EventLog) -> None:
        assert await event_log.head() == 0
        assert await event_log.read_after(0) == []
        assert await event_log.load_stream(new_key_id()) == []
        assert walk_chain(await event_log.read_after(0)).events == 0

    async def test_appends_take_dense_positions_and_continue_the_stream(
        self, event_log: EventLog
    ) -> None:
        key_id = new_key_id()
        [first] = await event_log.append([generated(key_id)], actor=ACTOR, expected_version=0)
        assert (first.position, first.stream_version) == (1, 1)
        assert first.hash == chain_hash(GENESIS_HASH, envelope_body(first))
        several = [later(key_id, step) for step in range(1, 4)]
        appended = await event_log.append(several, actor=ACTOR, expected_version=1)
        assert [e.position for e in appended] == [2, 3, 4]
        assert [e.stream_version for e in appended] == [2, 3, 4]
        assert [e.event_type for e in appended] == [e.event_type for e in several]
        assert all(e.actor == ACTOR and e.key_id == key_id for e in appended)
        assert len({e.event_id for e in [first, *appended]}) == 4
        assert await event_log.head() == 4

    async def test_appending_nothing_writes_nothing(self, event_log: EventLog) -> None:
        key_id = new_key_id()
        await event_log.append([generated(key_id)], actor=ACTOR, expected_version=0)
        assert await event_log.append([], actor=ACTOR, expected_version=1) == []
        assert await event_log.head() == 1

    async def test_the_hash_chain_links_every_event_across_keys(self, event_log: EventLog) -> None:
        keys = [new_key_id() for _ in range(3)]
        for key_id in keys:
            await event_log.append([generated(key_id)], actor=ACTOR, expected_version=0)
        for step in range(1, 3):
            for key_id in keys:
                await event_log.append([later(key_id, step)], actor=ACTOR, expected_version=step)
        log = await event_log.read_after(0)
        report = walk_chain(log)
        assert report.ok and report.events == 9 == await event_log.head()
        previous = GENESIS_HASH
        for envelope in log:
            assert envelope.hash == chain_hash(previous, envelope_body(envelope))
            previous = envelope.hash

    @pytest.mark.parametrize("stale_by", [1, 2, 3])
    async def test_a_stale_expected_version_is_refused_and_writes_nothing(
        self, event_log: EventLog, stale_by: int
    ) -> None:
        key_id = new_key_id()
        await event_log.append([generated(key_id)], actor=ACTOR, expected_version=0)
        steps = [later(key_id, step) for step in range(1, 4)]
        await event_log.append(steps, actor=ACTOR, expected_version=1)
        before = await event_log.read_after(0)
        late = [later(key_id, 7), later(key_id, 8)]
        await refused(event_log.append(late, actor=ACTOR, expected_version=4 - stale_by))
        assert await event_log.read_after(0) == before
        assert await event_log.head() == 4
        # The log goes on from where it was: the refusal left no hole and no stray hash.
        [next_one] = await event_log.append(late[:1], actor=ACTOR, expected_version=4)
        assert (next_one.position, next_one.stream_version) == (5, 5)
        assert walk_chain(await event_log.read_after(0)).ok

    async def test_a_second_generate_of_the_same_key_is_refused(self, event_log: EventLog) -> None:
        key_id = new_key_id()
        await event_log.append([generated(key_id)], actor=ACTOR, expected_version=0)
        await refused(event_log.append([generated(key_id)], actor=ACTOR, expected_version=0))
        assert len(await event_log.load_stream(key_id)) == 1

    async def test_of_two_racing_appends_on_one_version_one_wins(self, event_log: EventLog) -> None:
        key_id = new_key_id()
        await event_log.append([generated(key_id)], actor=ACTOR, expected_version=0)
        racing = [
            event_log.append([later(key_id, step)], actor=ACTOR, expected_version=1)
            for step in (1, 2)
        ]
        results = await asyncio.gather(*racing, return_exceptions=True)
        won = [r for r in results if isinstance(r, list)]
        lost = [r for r in results if isinstance(r, KeyledgerError)]
        assert len(won) == 1 and len(lost) == 1 and lost[0].code == "version_mismatch"
        assert [e.stream_version for e in await event_log.load_stream(key_id)] == [1, 2]
        assert walk_chain(await event_log.read_after(0)).ok

    async def test_streams_are_isolated_between_keys(self, event_log: EventLog) -> None:
        a, b, c = new_key_id(), new_key_id(), new_key_id()
        await event_log.append([generated(a)], actor=ACTOR, expected_version=0)
        await event_log.append([generated(b, org_id="other")], actor=ACTOR, expected_version=0)
        await event_log.append([later(a, 1)], actor=ACTOR, expected_version=1)
        await event_log.append([later(b, 1, org_id="other")], actor=ACTOR, expected_version=1)
        await event_log.append([later(a, 2)], actor=ACTOR, expected_version=2)
        stream_a = await event_log.load_stream(a)
        stream_b = await event_log.load_stream(b)
        assert [e.position for e in stream_a] == [1, 3, 5]
        assert [e.stream_version for e in stream_a] == [1, 2, 3]
        assert [e.position for e in stream_b] == [2, 4]
        assert {e.key_id for e in stream_a} == {a} and {e.org_id for e in stream_b} == {"other"}
        assert await event_log.load_stream(c) == []
        # Each key's versions are its own: b's version 2 did not take a's.
        [a4] = await event_log.append([later(a, 3)], actor=ACTOR, expected_version=3)
        assert a4.stream_version == 4

    async def test_reading_after_a_position(self, event_log: EventLog) -> None:
        appended = []
        for _ in range(5):
            key_id = new_key_id()
            appended += await event_log.append([generated(key_id)], actor=ACTOR, expected_version=0)
            appended += await event_log.append([later(key_id, 1)], actor=ACTOR, expected_version=1)
        assert await event_log.read_after(0) == appended
        assert await event_log.read_after(3) == appended[3:]
        assert await event_log.read_after(3, limit=4) == appended[3:7]
        assert await event_log.read_after(9, limit=4) == appended[9:]
        assert await event_log.read_after(10) == []
        assert await event_log.read_after(50) == []
        pages, position = [], 0
        while page := await event_log.read_after(position, limit=3):
            pages.append(page)
            position = page[-1].position
        assert [len(p) for p in pages] == [3, 3, 3, 1]
        assert [e for p in pages for e in p] == appended

    async def test_events_round_trip_equal(self, event_log: EventLog) -> None:
        key_id = new_key_id()
        events: list[DomainEvent] = [
            generated(key_id),
            later(key_id, 1),
            later(key_id, 2),
            KeyRevoked(
                key_id=key_id,
                org_id="acme",
                occurred_at=T0 + timedelta(hours=1),
                reason="compromised",
            ),
        ]
        appended = await event_log.append(events, actor=ACTOR, expected_version=0)
        loaded = await event_log.load_stream(key_id)
        assert loaded == appended == await event_log.read_after(0)
        for envelope, event in zip(loaded, events, strict=True):
            assert domain_event_of(envelope) == event
            assert decode(envelope_to_json(envelope)) == (envelope, event)
            assert envelope.occurred_at == event.occurred_at

    async def test_every_kind_of_key_round_trips(self, event_log: EventLog) -> None:
        kinds = [
            generated(new_key_id(), type="signing", algorithm="ed25519", public_key="pem",
                      secret_hash=None, hint=None, rate_limit=None, expires_at=None),
            generated(new_key_id(), type="embed", environment="test", resource="r",
                      allowed_origins=("https://a.example",), metadata={}),
            generated(new_key_id(), name="x" * 100, scopes=()),
        ]  # fmt: skip
        for event in kinds:
            [envelope] = await event_log.append([event], actor=ACTOR, expected_version=0)
            [loaded] = await event_log.load_stream(event.key_id)
            assert loaded == envelope and domain_event_of(loaded) == event
