"""Pure parts of the read side: contiguity, the view fold, query parameters."""

from __future__ import annotations

from uuid import uuid4

import pytest
from multidict import MultiDict

from events.codec import GENESIS_HASH, seal, to_domain_event
from events.models import Envelope, KeyEvent, KeyRenamed
from projections.key_views import KeyFilter, fold_batch
from projections.runner import ProjectionGap, check_contiguous
from service.errors import KeyledgerError
from service.http import query_params as q
from service.store.event_store import LoggedEvent
from tests.support.event_log import TEST_ACTOR, generated


def sealed(events: list[KeyEvent], first_position: int = 1) -> list[Envelope]:
    envelopes, previous, versions = [], GENESIS_HASH, {}
    for offset, event in enumerate(events):
        versions[event.key_id] = versions.get(event.key_id, 0) + 1
        envelope = seal(
            event,
            event_id=uuid4(),
            stream_version=versions[event.key_id],
            position=first_position + offset,
            actor=TEST_ACTOR,
            previous_hash=previous,
        )
        envelopes.append(envelope)
        previous = envelope.hash
    return envelopes


def logged(envelopes: list[Envelope]) -> list[LoggedEvent]:
    return [LoggedEvent(e.position, to_domain_event(e)) for e in envelopes]


def test_contiguity_is_checked() -> None:
    batch = sealed([generated("acme") for _ in range(3)], first_position=5)
    check_contiguous("p", 4, batch)
    with pytest.raises(ProjectionGap) as gap:
        check_contiguous("p", 3, batch)
    assert (gap.value.expected, gap.value.found) == (4, 5)
    with pytest.raises(ProjectionGap):
        check_contiguous("p", 4, [batch[0], batch[2]])


def test_fold_batch_folds_per_key_and_keeps_the_last_position() -> None:
    born = generated("acme", "old")
    rename = KeyRenamed(
        key_id=born.key_id,
        org_id="acme",
        occurred_at=born.occurred_at,
        name="new",
        previous_name="old",
    )
    other = generated("acme", "other")
    folded = fold_batch(logged(sealed([born, other, rename])), {})
    state, position = folded[born.key_id]
    assert (state.name, state.version, position) == ("new", 2, 3)
    assert folded[other.key_id][1] == 2
    # A later batch starts from what is known.
    again = fold_batch(logged(sealed([rename], first_position=4)), {born.key_id: state})
    assert again[born.key_id][0].version == 3 and set(again) == {born.key_id}


def test_key_cursor_round_trip_and_binding() -> None:
    where = KeyFilter(status="active")
    cursor = q.encode_key_cursor("acme", where, "key_01HZZZZZZZZZZZZZZZZZZZZZZZ")
    assert q.decode_key_cursor(cursor, "acme", where) == "key_01HZZZZZZZZZZZZZZZZZZZZZZZ"
    for org, other_filter in (("other", where), ("acme", KeyFilter())):
        with pytest.raises(KeyledgerError) as refused:
            q.decode_key_cursor(cursor, org, other_filter)
        assert refused.value.code == "invalid_cursor"


def test_query_parameters() -> None:
    assert q.limit_of(MultiDict(), default=20, maximum=100) == 20
    assert q.limit_of(MultiDict(limit="100"), default=20, maximum=100) == 100
    assert q.min_position_of(MultiDict(min_position="0")) == 0
    assert q.timestamp_of(MultiDict(since="2030-01-01T00:00:00+02:00"), "since").hour == 0
    with pytest.raises(KeyledgerError) as refused:
        q.reject_unknown(MultiDict([("limit", "1"), ("limit", "2")]), ("limit",))
    assert refused.value.code == "validation_error"
