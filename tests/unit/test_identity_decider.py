"""The identity decider, given/when/then: a history of events, a command, what follows."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events.models import IdentityConfigured, NamedRateLimit, identity_stream_id, is_identity_stream
from service.domain.identities import (
    ConfigureIdentity,
    IdentityState,
    ImpossibleIdentityEvent,
    decide_identity,
    evolve_identity,
    fold_identity,
)

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
ORG, IDENTITY = "acme", "cus_42"
STREAM = identity_stream_id(ORG, IDENTITY)
HOURLY = (NamedRateLimit(name="customer", limit=100, window="1h"),)
DAILY = (NamedRateLimit(name="daily", limit=1000, window="1d"),)


def configured(
    rate_limits: tuple[NamedRateLimit, ...] = HOURLY,
    *,
    previous: tuple[NamedRateLimit, ...] = (),
    metadata: dict[str, Any] | None = None,
    previous_metadata: dict[str, Any] | None = None,
    existed: bool = False,
    at: datetime = T0,
) -> IdentityConfigured:
    return IdentityConfigured(
        key_id=STREAM,
        org_id=ORG,
        occurred_at=at,
        identity_id=IDENTITY,
        rate_limits=rate_limits,
        previous_rate_limits=previous,
        metadata=metadata or {},
        previous_metadata=previous_metadata or {},
        existed=existed,
    )


def configure(
    rate_limits: tuple[NamedRateLimit, ...] = HOURLY,
    metadata: dict[str, Any] | None = None,
    at: datetime = T0,
) -> ConfigureIdentity:
    return ConfigureIdentity(ORG, IDENTITY, at, rate_limits, metadata or {})


def given(*history: IdentityConfigured) -> IdentityState | None:
    return fold_identity(history)


def test_given_nothing_when_configured_then_it_exists_with_its_limits() -> None:
    events = decide_identity(configure(), given())
    assert events == [configured()]
    state = fold_identity(events)
    assert state is not None
    assert (state.stream_id, state.identity_id, state.rate_limits, state.version) == (
        STREAM,
        IDENTITY,
        HOURLY,
        1,
    )
    assert state.created_at == state.updated_at == T0


def test_given_configured_when_replaced_then_one_event_with_before_and_after() -> None:
    later = T0 + timedelta(minutes=5)
    state = given(configured())
    events = decide_identity(configure(DAILY, {"plan": "pro"}, at=later), state)
    assert events == [
        configured(DAILY, previous=HOURLY, metadata={"plan": "pro"}, existed=True, at=later)
    ]
    after = evolve_identity(state, events[0])
    assert (after.rate_limits, after.metadata, after.version) == (DAILY, {"plan": "pro"}, 2)
    assert (after.created_at, after.updated_at) == (T0, later)


def test_given_configured_when_the_same_again_then_nothing() -> None:
    state = given(configured(metadata={"plan": "pro"}))
    assert decide_identity(configure(HOURLY, {"plan": "pro"}), state) == []
    # Clearing every limit is a change like any other.
    assert decide_identity(configure((), {"plan": "pro"}), state)[0].rate_limits == ()


@pytest.mark.parametrize(
    "history",
    [
        [configured(existed=True)],  # says it existed, but nothing came before
        [configured(), configured()],  # a second "first" configuration
    ],
)
def test_impossible_histories_do_not_fold(history: list[IdentityConfigured]) -> None:
    with pytest.raises(ImpossibleIdentityEvent):
        fold_identity(history)


def test_an_event_on_another_stream_than_its_identity_does_not_fold() -> None:
    stray = configured().model_copy(update={"key_id": identity_stream_id(ORG, "someone")})
    with pytest.raises(ImpossibleIdentityEvent):
        evolve_identity(None, stray)


def test_identity_streams_never_look_like_key_streams() -> None:
    assert is_identity_stream(STREAM) and not STREAM.startswith("key_")
    assert identity_stream_id("acme", "a\nb") != identity_stream_id("acme\na", "b")
    assert identity_stream_id("acme", IDENTITY) != identity_stream_id("other", IDENTITY)
    assert identity_stream_id("acme", "a.b *>").isascii()  # safe in a NATS subject
    assert not is_identity_stream("key_01JD0000000000000000000000")
