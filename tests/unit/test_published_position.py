"""The verification feed reads a published envelope's position without decoding it."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

from hypothesis import given, settings
from hypothesis import strategies as st

from events.codec import GENESIS_HASH, envelope_to_json, seal
from events.models import Actor, KeyGenerated
from service.verification.feed import published_position

AT = datetime(2026, 5, 1, tzinfo=UTC)


def published(position: int, metadata: dict[str, object]) -> str:
    event = KeyGenerated(
        key_id="key_x",
        org_id="acme",
        occurred_at=AT,
        name="k",
        type="secret",
        environment="live",
        metadata=metadata,
    )
    envelope = seal(
        event,
        event_id=uuid4(),
        stream_version=1,
        position=position,
        actor=Actor(id="a", request_id='","position":1,"'),
        previous_hash=GENESIS_HASH,
    )
    return envelope_to_json(envelope)


@settings(max_examples=100, deadline=None)
@given(
    st.integers(min_value=1, max_value=2**62),
    st.dictionaries(st.sampled_from(["position", "a", "z"]), st.integers() | st.text()),
)
def test_the_position_is_the_envelopes_whatever_its_data_holds(
    position: int, metadata: dict[str, object]
) -> None:
    text = published(position, metadata)
    assert published_position(text) == position
    assert published_position(text.encode()) == position


def test_a_message_of_another_shape_gives_none() -> None:
    assert published_position(b'{"position":"7"}') is None
    assert published_position(b"not json") is None
    assert published_position(b'{"a":1,"position":-3,"b":2}') is None
