"""The event envelope: canonical JSON, the hash chain, decoding and upcasting."""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events import (
    GENESIS_HASH,
    Actor,
    KeyRenamed,
    KeyRevoked,
    UnknownEventType,
    canonical_json,
    chain_hash,
    decode,
    envelope_body,
    envelope_to_json,
    event_subject,
    register_upcaster,
    seal,
    subject_filter,
    to_domain_event,
)
from events.codec import (
    actor_json,
    canonical_bytes,
    envelope_to_bytes,
    format_timestamp,
    seal_encoded,
)
from events.models import DomainEvent, KeyGenerated

AT = datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def revoked_envelope(previous_hash: str = GENESIS_HASH, position: int = 1):
    event = KeyRevoked(key_id="key_x", org_id="acme", occurred_at=AT, reason="leaked")
    return seal(
        event,
        event_id=uuid4(),
        stream_version=2,
        position=position,
        actor=Actor(id="key_admin", on_behalf_of="user:42", request_id="r1"),
        previous_hash=previous_hash,
    )


def test_canonical_json_sorts_keys_without_whitespace() -> None:
    assert canonical_json({"b": 1, "a": ["é", {"d": None, "c": True}]}) == (
        '{"a":["é",{"c":true,"d":null}],"b":1}'
    )


def test_hash_is_sha256_of_previous_hash_and_canonical_body() -> None:
    envelope = revoked_envelope()
    body = envelope_body(envelope)
    assert "hash" not in body
    expected = hashlib.sha256((GENESIS_HASH + canonical_json(body)).encode()).hexdigest()
    assert envelope.hash == expected
    assert body["occurred_at"] == "2026-05-01T12:00:00.123456Z"


def test_hash_links_to_the_previous_event() -> None:
    first = revoked_envelope()
    assert revoked_envelope(first.hash, 2).hash != revoked_envelope(GENESIS_HASH, 2).hash


def test_decode_round_trip() -> None:
    envelope = revoked_envelope()
    decoded, event = decode(envelope_to_json(envelope).encode())
    assert decoded == envelope
    assert event == KeyRevoked(key_id="key_x", org_id="acme", occurred_at=AT, reason="leaked")


def test_unknown_fields_are_tolerated() -> None:
    payload = json.loads(envelope_to_json(revoked_envelope()))
    payload["new_envelope_field"] = 1
    payload["data"]["new_data_field"] = "x"
    _, event = decode(json.dumps(payload))
    assert isinstance(event, KeyRevoked)


def test_unknown_event_type_is_reported() -> None:
    payload = json.loads(envelope_to_json(revoked_envelope()))
    payload["event_type"] = "KeyTeleported"
    with pytest.raises(UnknownEventType):
        decode(json.dumps(payload))


def test_upcaster_lifts_old_schema_versions(monkeypatch: pytest.MonkeyPatch) -> None:
    class KeyRenamedV2(KeyRenamed):
        schema_version = 2

    monkeypatch.setitem(__import__("events.models").models.EVENT_TYPES, "KeyRenamed", KeyRenamedV2)
    register_upcaster("KeyRenamed", 1, lambda d: {**d, "previous_name": d.pop("old", "?")})
    event = KeyRenamed(key_id="k", org_id="o", occurred_at=AT, name="n", previous_name="p")
    envelope = seal(
        event,
        event_id=uuid4(),
        stream_version=2,
        position=1,
        actor=Actor(id="a"),
        previous_hash=GENESIS_HASH,
    )
    old = envelope.model_copy(update={"data": {"name": "n", "old": "legacy"}})
    upcast = to_domain_event(old)
    assert isinstance(upcast, KeyRenamedV2) and upcast.previous_name == "legacy"


def test_events_are_frozen() -> None:
    event = KeyRevoked(key_id="k", org_id="o", occurred_at=AT, reason="other")
    with pytest.raises(Exception):  # noqa: B017 - pydantic's ValidationError on frozen models
        event.reason = "leaked"  # type: ignore[misc]
    assert isinstance(event, DomainEvent)


def test_subjects() -> None:
    assert event_subject("acme", "key_1", "KeyRevoked") == "keyledger.events.acme.key_1.KeyRevoked"
    assert subject_filter(event_type="KeyRevoked") == "keyledger.events.*.*.KeyRevoked"
    assert subject_filter(org_id="acme") == "keyledger.events.acme.*.*"


_any_character = st.characters(exclude_categories=())  # lone surrogates too
# JSON values of every kind an event's data can hold, and then some: floats (formatted
# by ``json`` only), lone surrogates, big ints, non-ASCII keys, tuples.
_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(_any_character),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.tuples(inner, inner)
        | st.dictionaries(st.text(_any_character, max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(_json_values)
def test_canonical_json_is_the_json_modules_text_whatever_the_value(value: object) -> None:
    # The hash chain signs these bytes: the fast encoder may never change them.
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert canonical_json(value) == expected
    try:
        expected_bytes = expected.encode()
    except UnicodeEncodeError:
        with pytest.raises(UnicodeEncodeError):
            canonical_bytes(value)
    else:
        assert canonical_bytes(value) == expected_bytes


@settings(max_examples=200, deadline=None)
@given(st.datetimes(timezones=st.timezones()))
def test_timestamps_have_one_format(moment: datetime) -> None:
    expected = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert format_timestamp(moment) == expected


def test_seal_hashes_the_body_of_the_envelope_it_returns() -> None:
    envelope = revoked_envelope(previous_hash="f" * 64, position=7)
    assert envelope.hash == chain_hash("f" * 64, envelope_body(envelope))
    assert envelope == envelope.model_validate_json(envelope.model_dump_json())


@pytest.mark.parametrize(
    "actor",
    [Actor(id="a"), Actor(id="key_1", on_behalf_of="user:7", request_id="r-1"), Actor(id="é")],
)
def test_an_actor_is_made_json_as_pydantic_would(actor: Actor) -> None:
    # actor_json spells the fields out: a field added to Actor must be added there too.
    assert set(Actor.model_fields) == {"id", "on_behalf_of", "request_id"}
    assert actor_json(actor) == actor.model_dump(mode="json")


def test_a_message_payload_is_the_envelope_json_encoded() -> None:
    event = KeyRevoked(
        key_id="key_x", org_id="acme", occurred_at=datetime(2026, 5, 1, tzinfo=UTC), reason="leaked"
    )
    envelope = seal(
        event,
        event_id=uuid4(),
        stream_version=1,
        position=1,
        actor=Actor(id="a", request_id="ü"),
        previous_hash=GENESIS_HASH,
    )
    assert envelope_to_bytes(envelope) == envelope_to_json(envelope).encode()
    assert json.loads(envelope_to_bytes(envelope))["hash"] == envelope.hash


_metadata = st.dictionaries(st.text(max_size=6), _json_values, max_size=4)


@settings(max_examples=200, deadline=None)
@given(
    metadata=_metadata,
    name=st.text(max_size=12),
    org_id=st.text(min_size=1, max_size=8),
    actor_id=st.text(min_size=1, max_size=8),
    moment=st.datetimes(timezones=st.timezones()),
)
def test_seal_encoded_gives_what_encoding_the_sealed_envelope_gives(
    metadata: dict[str, object], name: str, org_id: str, actor_id: str, moment: datetime
) -> None:
    # The writer stores and publishes these instead of encoding the envelope again.
    event = KeyGenerated(
        key_id="key_x",
        org_id=org_id,
        occurred_at=moment,
        name=name,
        type="secret",
        environment="live",
        metadata=metadata,
    )
    actor = Actor(id=actor_id, request_id="r-1")
    sealing = {
        "event_id": uuid4(),
        "stream_version": 2,
        "position": 9,
        "actor": actor,
        "previous_hash": "e" * 64,
    }
    try:
        envelope, encoded = seal_encoded(event, **sealing)  # type: ignore[arg-type]
    except UnicodeEncodeError:  # a lone surrogate: no event holding one is sealed at all
        with pytest.raises(UnicodeEncodeError):
            chain_hash("e" * 64, {"data": event.data(), "org_id": org_id, "actor": actor_id})
        return
    assert envelope.hash == seal(event, **sealing).hash  # type: ignore[arg-type]
    assert envelope.hash == chain_hash("e" * 64, envelope_body(envelope))
    assert encoded.payload == envelope_to_bytes(envelope)
    assert encoded.actor_json == canonical_json(actor_json(envelope.actor))
    assert encoded.data_json == canonical_json(envelope.data)
