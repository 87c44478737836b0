"""Handed-over commits: taken only where they continue what a follower has applied."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from events.codec import GENESIS_HASH, seal, to_domain_event
from events.models import Actor, Envelope, KeyRevoked
from service.store.event_rows import Committed, LoggedEvent, UnreadableEvent
from service.store.handed_over import HandedOver, logged_events

AT = datetime(2026, 5, 1, tzinfo=UTC)


def at(*positions: int) -> list[Committed]:
    return [Committed(envelope) for envelope in envelopes_at(*positions)]


def envelopes_at(*positions: int) -> list[Envelope]:
    event = KeyRevoked(key_id="key_x", org_id="acme", occurred_at=AT, reason="leaked")
    return [
        seal(
            event,
            event_id=uuid4(),
            stream_version=1,
            position=p,
            actor=Actor(id="a"),
            previous_hash=GENESIS_HASH,
        )
        for p in positions
    ]


def positions(envelopes: list[Committed]) -> list[int]:
    return [e.position for e in envelopes]


def test_commits_that_continue_the_published_position_are_taken_in_order() -> None:
    handed = HandedOver(limit=100)
    handed.add(at(5, 6), leading=True)
    handed.add(at(7), leading=True)
    assert positions(handed.take(after=4, limit=2)) == [5, 6]
    assert positions(handed.take(after=6, limit=10)) == [7]
    assert handed.take(after=7, limit=10) == []


def test_already_published_ones_are_skipped() -> None:
    handed = HandedOver(limit=100)
    handed.add(at(5, 6, 7), leading=True)
    assert positions(handed.take(after=6, limit=10)) == [7]


def test_a_gap_means_the_log_is_read_instead() -> None:
    handed = HandedOver(limit=100)
    handed.add(at(5, 6), leading=True)
    # Position 4 is another replica's: nothing is taken, and nothing is kept.
    assert handed.take(after=3, limit=10) == []
    assert handed.take(after=4, limit=10) == []
    handed.add(at(8, 10), leading=True)
    assert positions(handed.take(after=7, limit=10)) == [8]
    assert handed.take(after=8, limit=10) == []


def test_nothing_is_kept_while_not_leading_or_past_the_limit() -> None:
    handed = HandedOver(limit=3)
    handed.add(at(1, 2), leading=False)
    assert handed.take(after=0, limit=10) == []
    handed.add(at(1, 2, 3), leading=True)
    handed.add(at(4), leading=True)  # over the limit: what was kept goes
    assert handed.take(after=0, limit=10) == []


def test_handed_envelopes_become_the_events_a_log_read_gives() -> None:
    envelopes = envelopes_at(5, 6)
    unknown = envelopes[1].model_copy(update={"event_type": "KeyTeleported"})
    logged = logged_events([Committed(envelopes[0]), Committed(unknown)])
    first, second = logged
    assert isinstance(first, LoggedEvent)
    assert first.position == 5
    assert first.event == to_domain_event(envelopes[0])
    # One that does not decode is unreadable in its place, as a row of the log would be.
    assert isinstance(second, UnreadableEvent)
    assert (second.position, second.key_id, second.event_type) == (6, "key_x", "KeyTeleported")


def test_the_event_its_writer_decoded_is_taken_as_it_is() -> None:
    envelope = envelopes_at(5)[0]
    decoded = to_domain_event(envelope)
    [logged] = logged_events([Committed(envelope, decoded)])
    assert isinstance(logged, LoggedEvent)
    assert logged.event is decoded
