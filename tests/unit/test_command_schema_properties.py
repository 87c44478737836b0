"""Whatever the command schemas accept, every reader downstream accepts too (docs/security.md §1).

For hostile bodies (text of every Unicode category, lone surrogates, control
characters, deep nesting, odd instants and numbers) the schema either refuses
with a 4xx code, or the events it leads to:
(a) encode as canonical JSON (valid UTF-8) and hash into the chain,
(b) decode with ``events.decode`` to equal envelopes and events, re-encoding to
    the very same bytes (so ``audit verify`` recomputes the same hash),
(c) give a valid NATS subject with the subject builder.
(d), storage in PostgreSQL ``jsonb`` and ``text``, is in
``tests/integration/test_hostile_text_storage.py``.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from events import decode
from events.codec import GENESIS_HASH, chain_hash, envelope_body, envelope_to_json
from events.models import Actor, KeyEvent
from events.subjects import event_subject, is_subject_token
from service.clock import utc_now
from service.domain.ids import new_key_id
from service.domain.orgs import SYSTEM_ORG, is_org_id
from service.domain.vocabulary import HEADER_TEXT, REQUEST_ID
from service.http.schemas import (
    DisableKeyBody,
    GenerateKeyBody,
    RenameKeyBody,
    RevokeKeyBody,
    RotateKeyBody,
    UpdateKeyBody,
)
from tests.support import hostile

PROPERTY = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
org_ids = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,20}\Z") | st.just(SYSTEM_ORG)


def assert_downstream_accepts(event: KeyEvent, actor: Actor | None = None) -> None:
    envelope = hostile.sealed(event, actor)
    text = envelope_to_json(envelope)
    text.encode("utf-8")  # (a) strict UTF-8: no lone surrogate got through
    assert envelope.hash == chain_hash(GENESIS_HASH, envelope_body(envelope))
    decoded_envelope, decoded_event = decode(text.encode())  # (b)
    assert decoded_envelope == envelope
    assert decoded_event == event
    assert envelope_to_json(decoded_envelope) == text
    subject = event_subject(envelope.org_id, envelope.key_id, envelope.event_type)  # (c)
    assert all(is_subject_token(token) for token in subject.split("."))
    # PostgreSQL text and jsonb refuse NUL (the real database: test_hostile_text_storage.py).
    assert "\x00" not in json.dumps(json.loads(text), ensure_ascii=False)


@PROPERTY
@given(
    name=hostile.texts,
    resource=hostile.texts,
    metadata=hostile.metadata | st.dictionaries(hostile.texts, hostile.texts, max_size=3),
)
def test_accepted_text_fields_flow_downstream(
    name: str, resource: str, metadata: dict[str, Any]
) -> None:
    # One field at a time, so that a refusal of one does not hide another.
    bodies = [
        {"name": name, "type": "secret"},
        {"name": "k", "type": "secret", "metadata": metadata},
        {"name": "k", "type": "embed", "resource": resource, "allowed_origins": ["https://a.b"]},
    ]
    for body in bodies:
        parsed = hostile.parsed(GenerateKeyBody, body)
        if parsed is not None:
            for event in hostile.generated("acme", parsed):
                assert_downstream_accepts(event)


@PROPERTY
@given(org_id=org_ids, body=hostile.generate_bodies)
def test_accepted_generate_bodies_flow_downstream(org_id: str, body: dict[str, Any]) -> None:
    parsed = hostile.parsed(GenerateKeyBody, body)
    assume(parsed is not None)
    assume(parsed.expires_at is None or parsed.expires_at > utc_now())  # the route's 422
    for event in hostile.generated(org_id, parsed):
        assert_downstream_accepts(event)


@PROPERTY
@given(
    org_id=org_ids,
    case=st.one_of(
        st.tuples(st.just(RenameKeyBody), hostile.rename_bodies),
        st.tuples(st.just(DisableKeyBody), hostile.disable_bodies),
        st.tuples(st.just(RevokeKeyBody), hostile.revoke_bodies),
        st.tuples(st.just(RotateKeyBody), hostile.rotate_bodies),
    ),
)
def test_accepted_change_bodies_flow_downstream(
    org_id: str, case: tuple[type[Any], dict[str, Any]]
) -> None:
    model, body = case
    parsed = hostile.parsed(model, body)
    assume(parsed is not None)
    for event in hostile.changed(org_id, model, parsed):
        assert_downstream_accepts(event)


@PROPERTY
@given(org_id=hostile.texts | org_ids | st.builds(lambda o: o + "\n", org_ids))
def test_accepted_org_ids_make_subjects_and_events(org_id: str) -> None:
    if not is_org_id(org_id):
        return  # the routes answer 422
    for event in hostile.generated(org_id, GenerateKeyBody(name="k", type="secret")):
        assert_downstream_accepts(event)


@PROPERTY
@given(
    on_behalf_of=hostile.texts | st.from_regex(HEADER_TEXT.regex),
    request_id=hostile.texts | st.from_regex(REQUEST_ID.regex) | st.just("req-1\n"),
)
def test_accepted_headers_make_actors_that_flow_downstream(
    on_behalf_of: str, request_id: str
) -> None:
    # What _command_request and the middleware take from the headers.
    assume(HEADER_TEXT.matches(on_behalf_of))
    actor = Actor(
        id=new_key_id(),
        on_behalf_of=on_behalf_of,
        request_id=request_id if REQUEST_ID.matches(request_id) else "req_generated",
    )
    for event in hostile.generated("acme", GenerateKeyBody(name="k", type="secret")):
        assert_downstream_accepts(event, actor)


@PROPERTY
@given(body=hostile.generate_bodies)
def test_refusals_are_client_errors_never_crashes(body: dict[str, Any]) -> None:
    # parsed() asserts that any refusal is a 4xx code (validation or JSON), nothing else.
    hostile.parsed(GenerateKeyBody, body)


def test_hostile_examples_are_refused() -> None:
    """Members of each class, named: the property above would find them, this pins them."""
    refused = [
        {"name": "a\x00b", "type": "secret"},
        {"name": "esc\x1b[31m", "type": "secret"},
        {"name": "del\x7f", "type": "secret"},
        {"name": "c1\x85", "type": "secret"},
        {"name": "lone \ud800", "type": "secret"},
        {"name": "k", "type": "secret", "metadata": {"a": "\ud800"}},
        {"name": "k", "type": "secret", "metadata": {"a\x00": 1}},
        {"name": "k", "type": "secret", "metadata": {"a": "nul\x00"}},
        {"name": "k", "type": "secret", "metadata": {"a": ["\x1b"]}},
        {"name": "k", "type": "secret", "metadata": hostile.nest_plain(10)},
        {"name": "k", "type": "secret", "scopes": ["orders:read\n"]},
        {"name": "k", "type": "secret", "expires_at": "9999-12-31T23:59:59-14:00"},
        {"name": "k", "type": "embed", "resource": "r\x00", "allowed_origins": ["https://a.b"]},
        {"name": "k", "type": "embed", "resource": "r", "allowed_origins": ["https://a.b\n"]},
    ]
    for body in refused:
        assert hostile.parsed(GenerateKeyBody, body) is None, body
    assert hostile.parsed(DisableKeyBody, {"reason": "why\x00"}) is None
    assert hostile.parsed(RenameKeyBody, {"name": "\udcff"}) is None
    assert hostile.parsed(RotateKeyBody, {"grace_period": "24h\n"}) is None
    assert hostile.parsed(RotateKeyBody, {"grace_period": "\u0663h"}) is None


@PROPERTY
@given(org_id=org_ids, body=hostile.update_bodies)
def test_accepted_update_bodies_flow_downstream(org_id: str, body: dict[str, Any]) -> None:
    parsed = hostile.parsed(UpdateKeyBody, body)  # a refusal is a 4xx code, never a crash
    assume(parsed is not None)
    for event in hostile.updated(org_id, parsed):
        assert_downstream_accepts(event)


def test_hostile_update_examples_are_refused() -> None:
    refused = [
        {"name": None},
        {"scopes": None},
        {"expires_on": "2030-01-01T00:00:00Z"},
        {"rate_limit": {"limit": 1, "window": "1s"}, "rate_limits": []},
        {"rate_limits": [{"name": "a", "limit": 1, "window": "1s"}] * 2},
        {"rate_limits": [{"name": f"l{i}", "limit": 1, "window": "1s"} for i in range(6)]},
        {"rate_limits": [{"name": "a\n", "limit": 1, "window": "1s"}]},
        {"credits": {"remaining": -1}},
        {"credits": {"remaining": 1, "refill": {"amount": 1, "interval": "daily", "day": 3}}},
        {"allowed_cidrs": ["10.0.0.1/8"]},
        {"allowed_cidrs": ["fe80::1%eth0"]},
        {"allowed_cidrs": ["10.0.0.0/8\n"]},
        {"allowed_cidrs": ["10.0.0.0/8"] * 101},
        {"identity_id": ""},
        {"identity_id": "a\x00"},
        {"identity_id": "x" * 129},
    ]
    for body in refused:
        assert hostile.parsed(UpdateKeyBody, body) is None, body
    accepted = hostile.parsed(UpdateKeyBody, {"allowed_cidrs": ["192.168.1.7", "2001:DB8::/32"]})
    assert accepted.allowed_cidrs == ["192.168.1.7/32", "2001:db8::/32"]
