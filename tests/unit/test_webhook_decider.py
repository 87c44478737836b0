"""Webhook endpoints as a decider, which logged events an endpoint is sent, and what the
in-memory readers of the log make of an endpoint's events (all pure).

Given a history of events and a command, what follows; for the dispatcher,
which envelopes an endpoint takes; for the verification index and its
snapshots, nothing to keep and nothing to set aside.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from events.codec import decode, envelope_to_json, seal
from events.models import (
    EVENT_TYPES,
    WEBHOOK_EVENT_TYPES,
    Actor,
    Envelope,
    KeyRenamed,
    WebhookRegistered,
    WebhookRemoved,
    is_identity_stream,
    is_webhook_stream,
)
from events.subjects import event_subject, subject_filter
from service.domain.decider import ImpossibleEvent, evolve
from service.domain.webhooks import (
    ImpossibleWebhookEvent,
    RegisterWebhook,
    RemoveWebhook,
    WebhookState,
    decide_webhook,
    evolve_webhook,
    fold_webhook,
)
from service.errors import KeyledgerError
from service.snapshot_tail import Tail
from service.store.event_rows import row_of
from service.verification.index import Offer, VerificationIndex
from service.webhooks.endpoints import DELIVERED_EVENT_TYPES, Endpoint, new_webhook_id

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
ORG = "acme"
HOOK = new_webhook_id()
URL = "https://hooks.example.com/keyledger"
ADMIN = Actor(id="key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P", on_behalf_of="user:7", request_id="req-1")


def registered(at: datetime = T0) -> WebhookRegistered:
    return WebhookRegistered(
        key_id=HOOK, org_id=ORG, occurred_at=at, webhook_id=HOOK, url=URL, event_types=()
    )


def removed(at: datetime = T0 + timedelta(hours=1)) -> WebhookRemoved:
    return WebhookRemoved(key_id=HOOK, org_id=ORG, occurred_at=at, webhook_id=HOOK)


def test_registering_makes_one_event_naming_the_endpoint_and_no_secret() -> None:
    command = RegisterWebhook(ORG, HOOK, URL, ("KeyRevoked",), T0)
    [event] = decide_webhook(command, None)
    assert isinstance(event, WebhookRegistered)
    assert (event.key_id, event.webhook_id, event.url) == (HOOK, HOOK, URL)
    assert event.event_types == ("KeyRevoked",)
    assert set(event.data()) == {"webhook_id", "url", "event_types"}


def test_an_endpoint_id_already_taken_cannot_be_registered() -> None:
    with pytest.raises(ImpossibleWebhookEvent):
        decide_webhook(RegisterWebhook(ORG, HOOK, URL, (), T0), fold_webhook([registered()]))


def test_removing_a_registered_endpoint_makes_one_event_then_nothing() -> None:
    state = fold_webhook([registered()])
    later = T0 + timedelta(hours=1)
    [event] = decide_webhook(RemoveWebhook(ORG, HOOK, later), state)
    assert isinstance(event, WebhookRemoved) and event.key_id == HOOK
    after = evolve_webhook(state, event)
    assert (after.removed_at, after.version) == (later, 2)
    assert decide_webhook(RemoveWebhook(ORG, HOOK, later), after) == []


@pytest.mark.parametrize("org", [ORG, "other-org"])
def test_an_unknown_or_foreign_endpoint_is_not_found(org: str) -> None:
    state = fold_webhook([registered()]) if org != ORG else None
    with pytest.raises(KeyledgerError) as raised:
        decide_webhook(RemoveWebhook(org, HOOK, T0), state)
    assert raised.value.code == "webhook_not_found"


def test_an_endpoint_registered_before_it_had_events_is_removed_from_version_0() -> None:
    legacy = WebhookState(HOOK, ORG, URL, (), T0, None, version=0)
    [event] = decide_webhook(RemoveWebhook(ORG, HOOK, T0), legacy)
    assert evolve_webhook(legacy, event).version == 1


def test_where_folding_an_endpoints_stream_starts() -> None:
    assert endpoint(position=10).state_before_events(has_events=True) is None
    removed_at = T0 + timedelta(hours=1)
    legacy = replace(endpoint(position=None), removed_at=removed_at)
    # Removed after endpoints had events: its WebhookRemoved is in the stream.
    start = legacy.state_before_events(has_events=True)
    assert start is not None and (start.removed_at, start.version) == (None, 0)
    assert fold_webhook([removed()], start) is not None
    # Removed before: the row says so, and removing it again writes nothing.
    before = legacy.state_before_events(has_events=False)
    assert before is not None and before.removed_at == removed_at
    assert decide_webhook(RemoveWebhook(ORG, HOOK, T0), before) == []


@pytest.mark.parametrize(
    ("history", "event"),
    [
        ([], removed()),
        ([registered()], registered()),
        ([registered(), removed()], removed()),
        ([], registered().model_copy(update={"key_id": new_webhook_id()})),
        ([registered()], removed().model_copy(update={"org_id": "other-org"})),
    ],
    ids=["removed-unregistered", "registered-twice", "removed-twice", "other-stream", "other-org"],
)
def test_impossible_histories_do_not_fold(
    history: list[WebhookRegistered | WebhookRemoved], event: WebhookRegistered | WebhookRemoved
) -> None:
    with pytest.raises(ImpossibleWebhookEvent):
        evolve_webhook(fold_webhook(history), event)


@pytest.mark.parametrize("event", [registered(), removed()])
def test_a_webhook_event_in_a_key_stream_is_poison(event: WebhookRegistered) -> None:
    with pytest.raises(ImpossibleEvent):
        evolve(None, event)


def envelope_of(event: WebhookRegistered | WebhookRemoved | KeyRenamed, position: int) -> Envelope:
    return seal(
        event,
        event_id=uuid4(),
        stream_version=1,
        position=position,
        actor=ADMIN,
        previous_hash="0" * 64,
    )


def test_webhook_events_decode_and_have_a_subject_of_their_own() -> None:
    envelope = envelope_of(registered(), 7)
    decoded, event = decode(envelope_to_json(envelope).encode())
    assert event == registered() and decoded.actor == ADMIN
    assert is_webhook_stream(decoded.key_id) and not is_identity_stream(decoded.key_id)
    assert event_subject(ORG, HOOK, "WebhookRegistered") == (
        f"keyledger.events.{ORG}.{HOOK}.WebhookRegistered"
    )
    assert subject_filter(org_id=ORG).endswith(".*.*")  # an endpoint's consumer sees them…


def endpoint(event_types: tuple[str, ...] = (), position: int | None = 10) -> Endpoint:
    return Endpoint(HOOK, ORG, URL, event_types, b"", T0, ADMIN, None, None, position)


def test_an_endpoint_is_never_sent_events_about_endpoints() -> None:
    assert set(DELIVERED_EVENT_TYPES) == set(EVENT_TYPES) - WEBHOOK_EVENT_TYPES
    for event_type in WEBHOOK_EVENT_TYPES:
        assert not endpoint().wants(event_type)  # …and lets them go
    assert endpoint().wants("KeyRevoked") and endpoint().wants("IdentityConfigured")
    assert not endpoint(("KeyRevoked",)).wants("KeyRenamed")


def test_an_endpoint_takes_only_what_was_logged_after_its_registration() -> None:
    rename = KeyRenamed(
        key_id="key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P", org_id=ORG, occurred_at=T0, name="b",
        previous_name="a",
    )  # fmt: skip
    assert not endpoint(position=10).follows(envelope_of(rename, 10))
    assert endpoint(position=10).follows(envelope_of(rename, 11))
    # Registered before endpoints had events: from its creation instant, as before.
    assert endpoint(position=None).follows(envelope_of(rename, 1))
    earlier = rename.model_copy(update={"occurred_at": T0 - timedelta(seconds=1)})
    assert not endpoint(position=None).follows(envelope_of(earlier, 11))
    assert endpoint(position=10).since() == (10, datetime(1970, 1, 1, tzinfo=UTC))
    assert endpoint(position=None).since() == (0, T0)


def test_the_index_and_its_snapshots_keep_nothing_of_an_endpoint() -> None:
    tail = Tail(0, set())
    for position, event in enumerate((registered(), removed()), start=1):
        tail.add(row_of(envelope_of(event, position)))  # as the writer reads it
    assert (len(tail.by_key), tail.position) == (0, 2)
    index = VerificationIndex()
    for position, event in enumerate((registered(), removed()), start=1):
        assert index.offer(envelope_of(event, position)) is Offer.APPLIED
    assert HOOK not in index.quarantined and index.by_key_id(HOOK) is None
