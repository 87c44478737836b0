"""Quarantine rules without I/O: whose fault a failure is, what a reason may say, the index."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from asyncpg import exceptions as pg
from nats import errors as nats_errors
from nats.js import errors as js_errors
from pydantic import ValidationError

from events.codec import GENESIS_HASH, seal
from events.models import Actor, Envelope, KeyEnabled, KeyGenerated, KeyRevoked
from service.domain import key_material
from service.domain.ids import new_key_id
from service.outbox.messages import Unpublishable, is_event_fault, message_of, subject_token
from service.store.event_store import UnreadableEvent
from service.store.quarantine import INDEX_CONSUMER, describe_failure, is_transient, storable
from service.verification.index import Offer, VerificationIndex
from service.verification.policy import Requirements, verify_bearer

PEPPER = b"unit-pepper"
NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
SECRET_LOOKING = "sk_live_" + "A" * 49


# --- whose fault: the event's (quarantine) or the infrastructure's (retry) ------------


@pytest.mark.parametrize(
    "error",
    [
        OSError("connection reset"),
        ConnectionResetError(),
        TimeoutError(),
        asyncpg.InterfaceError("connection is closed"),
        pg.ConnectionDoesNotExistError("gone"),
        pg.DeadlockDetectedError("deadlock"),
        pg.SerializationError("serialization"),
        pg.LockNotAvailableError("lock timeout"),
        pg.QueryCanceledError("statement timeout"),
        pg.AdminShutdownError("shutting down"),
        pg.TooManyConnectionsError("too many"),
        pg.UndefinedTableError("no such table"),
        pg.InFailedSQLTransactionError("aborted"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_infrastructure_failures_are_retried_not_quarantined(error: Exception) -> None:
    assert is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        pg.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8: 0x00"),
        pg.DataError("invalid input for query argument $1"),
        pg.ProgramLimitExceededError("index row size exceeds maximum"),
        pg.UniqueViolationError("duplicate key"),
        UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
        OverflowError("date value out of range"),
        ValueError("KeyRenamed before KeyGenerated"),
        RecursionError("maximum recursion depth exceeded"),
        KeyError("name"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_event_failures_are_quarantined(error: Exception) -> None:
    assert not is_transient(error)


@pytest.mark.parametrize(
    "error",
    [
        nats_errors.TimeoutError(),
        nats_errors.NoRespondersError(),
        js_errors.NoStreamResponseError(),
        nats_errors.ConnectionClosedError(),
        nats_errors.OutboundBufferLimitError(),
        nats_errors.ConnectionReconnectingError(),
        js_errors.APIError(code=503, err_code=10008, description="jetstream unavailable"),
        js_errors.APIError(code=400, err_code=10060, description="expected stream mismatch"),
        TimeoutError(),
        OSError(),
    ],
    ids=lambda e: type(e).__name__,
)
def test_nats_outages_are_never_the_events_fault(error: Exception) -> None:
    assert not is_event_fault(error)


@pytest.mark.parametrize(
    "error",
    [
        nats_errors.BadSubjectError(),
        nats_errors.MaxPayloadError(),
        nats_errors.BadHeaderError(),
        Unpublishable("its org id is not a NATS subject token"),
        js_errors.APIError(code=400, err_code=10054, description="message size exceeds maximum"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_unpublishable_events_are_the_events_fault(error: Exception) -> None:
    assert is_event_fault(error)


@pytest.mark.parametrize(
    "org_id",
    ["nl\n", "a b", "a.b", "*", ">", "a*", "", "tab\there", "bell\x07", "nbsp\u00a0", "café"],
)
def test_org_ids_that_are_not_one_subject_token_are_refused(org_id: str) -> None:
    with pytest.raises(Unpublishable):
        subject_token(org_id, "org id")
    envelope = _envelope(KeyGenerated(**_generated_fields(org_id=org_id)), 1)
    with pytest.raises(Unpublishable):
        message_of(envelope, "keyledger.events")


@pytest.mark.parametrize("org_id", ["acme", "org-1", "a_b", "_system"])
def test_ordinary_org_ids_are_one_subject_token(org_id: str) -> None:
    envelope = _envelope(KeyGenerated(**_generated_fields(org_id=org_id)), 1)
    subject, payload, headers = message_of(envelope, "keyledger.events")
    assert subject == f"keyledger.events.{org_id}.{envelope.key_id}.KeyGenerated"
    assert headers == {"Nats-Msg-Id": str(envelope.event_id)}
    assert payload.startswith(b"{")


# --- what a reason may say ------------------------------------------------------------


def test_a_reason_never_echoes_event_data_or_a_secret() -> None:
    try:
        KeyRevoked(
            key_id="k",
            org_id="o",
            occurred_at=NOW,
            reason=SECRET_LOOKING,  # type: ignore[arg-type]
        )
    except ValidationError as exc:
        reason = describe_failure(exc)
    assert "does not decode" in reason and "reason" in reason
    assert SECRET_LOOKING not in reason
    echoed = describe_failure(ValueError(f"bad value {SECRET_LOOKING} here"))
    assert SECRET_LOOKING not in echoed and "[redacted]" in echoed
    database = describe_failure(pg.CharacterNotInRepertoireError("invalid byte sequence: 0x00"))
    assert database.startswith("database refused it: CharacterNotInRepertoireError")


@pytest.mark.parametrize("text", ["a\x00b", "lone \ud800", "esc \x1b[31m", "x" * 5000])
def test_a_reason_is_always_storable_and_bounded(text: str) -> None:
    reason = describe_failure(ValueError(text))
    assert "\x00" not in reason and "\x1b" not in reason
    reason.encode("utf-8")  # no lone surrogate left
    assert len(reason) <= 400


def test_storable_leaves_ordinary_text_alone() -> None:
    assert storable("key_01HXYZ café") == "key_01HXYZ café"
    assert storable("a\x00b") == "a\\u0000b"


# --- the index fails closed for a key it sets aside -------------------------------------


def _generated_fields(**overrides: Any) -> dict[str, Any]:
    return {
        "key_id": new_key_id(),
        "org_id": "acme",
        "occurred_at": NOW - timedelta(days=1),
        "name": "Trading Bot",
        "type": "secret",
        "environment": "live",
        **overrides,
    }


def _envelope(event: Any, position: int, **changes: Any) -> Envelope:
    envelope = seal(
        event,
        event_id=uuid.uuid4(),
        stream_version=1,
        position=position,
        actor=Actor(id="test"),
        previous_hash=GENESIS_HASH,
    )
    return envelope.model_copy(update=changes) if changes else envelope


def _key(position: int) -> tuple[Envelope, str]:
    secret = key_material.new_secret("secret", "live")
    fields = _generated_fields(secret_hash=key_material.secret_hash(PEPPER, secret))
    return _envelope(KeyGenerated(**fields), position), secret


def _verify(index: VerificationIndex, secret: str) -> str:
    return verify_bearer(index, PEPPER, secret, Requirements(), NOW).code


@pytest.mark.parametrize(
    "poison",
    [
        {"event_type": "KeyTeleported"},
        {"data": {"reason": 5}},  # KeyRevoked's reason must be a known word
        {"data": {}},  # KeyRevoked without a reason
        {"schema_version": 0},  # older than any upcaster knows
    ],
    ids=["unknown type", "bad field", "missing field", "unknown schema"],
)
def test_the_index_sets_a_poisoned_key_aside_and_goes_on(poison: dict[str, Any]) -> None:
    victim, victim_secret = _key(1)
    other, other_secret = _key(2)
    revoke = KeyRevoked(key_id=victim.key_id, org_id="acme", occurred_at=NOW, reason="leaked")
    index = VerificationIndex()
    assert index.offer(victim) is Offer.APPLIED
    assert index.offer(other) is Offer.APPLIED
    assert _verify(index, victim_secret) == "VALID"
    assert index.offer(_envelope(revoke, 3, **poison)) is Offer.SET_ASIDE
    # Fails closed: never VALID, whatever the last good state was.
    assert _verify(index, victim_secret) == "NOT_FOUND"
    assert index.by_key_id(victim.key_id) is None
    # Later events of the key are skipped; every other key goes on.
    enable = KeyEnabled(key_id=victim.key_id, org_id="acme", occurred_at=NOW)
    assert index.offer(_envelope(enable, 4)) is Offer.SET_ASIDE
    assert _verify(index, victim_secret) == "NOT_FOUND"
    other_revoked = KeyRevoked(key_id=other.key_id, org_id="acme", occurred_at=NOW, reason="other")
    assert index.offer(_envelope(other_revoked, 5)) is Offer.APPLIED
    assert _verify(index, other_secret) == "REVOKED"
    assert index.position == 5
    [entry] = index.quarantined.values()
    assert (entry.consumer, entry.key_id, entry.position) == (INDEX_CONSUMER, victim.key_id, 3)
    assert index.unsaved_quarantines == [entry]


def test_an_unreadable_row_takes_its_place_in_the_index() -> None:
    victim, victim_secret = _key(1)
    index = VerificationIndex()
    index.offer(victim)
    unreadable = UnreadableEvent(2, victim.key_id, "acme", "KeyGenerated", ValueError("bad json"))
    assert index.offer_unreadable(unreadable) is Offer.SET_ASIDE
    assert index.offer_unreadable(unreadable) is Offer.STALE
    gap = UnreadableEvent(9, "key_x", "acme", "KeyGenerated", ValueError("bad json"))
    assert index.offer_unreadable(gap) is Offer.GAP
    assert index.position == 2
    assert _verify(index, victim_secret) == "NOT_FOUND"


def test_a_key_generated_with_a_bad_secret_hash_is_never_indexed() -> None:
    poisoned = _envelope(KeyGenerated(**_generated_fields(secret_hash="zz")), 1)
    index = VerificationIndex()
    assert index.offer(poisoned) is Offer.SET_ASIDE
    assert len(index) == 0 and poisoned.key_id in index.quarantined
