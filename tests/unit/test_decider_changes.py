"""Changes after issue (``UpdateKey``, ``service.domain.key_changes``), as given / when / then.

One event per aspect that really changes, each with its value before and
after; nothing for an aspect given with its current value; refused on
terminal keys like every command but revoke.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from events.models import (
    CreditRefill,
    Credits,
    KeyCreditsChanged,
    KeyCreditsRefilled,
    KeyEvent,
    KeyExpiryChanged,
    KeyGenerated,
    KeyIdentityChanged,
    KeyIpAllowlistChanged,
    KeyMetadataChanged,
    KeyOriginsChanged,
    KeyRateLimitsChanged,
    KeyRenamed,
    KeyScopesChanged,
    NamedRateLimit,
    RateLimit,
)
from service.domain.commands import RefillCredits, UpdateKey
from service.domain.credit_periods import next_period_start, period_of
from service.domain.decider import ImpossibleEvent, evolve, fold
from tests.support.decider_spec import given
from tests.unit.test_decider import KEY, ORG, T0, T1, disabled, expired, generated, revoked

BURST = NamedRateLimit(name="burst", limit=10, window="1s")
DAILY = NamedRateLimit(name="daily", limit=1000, window="1d")
CREDITS = Credits(remaining=100, refill=CreditRefill(amount=100, interval="monthly", day=3))
SUBJECT = {"key_id": KEY, "org_id": ORG, "occurred_at": T1}


def update(**changes: Any) -> UpdateKey:
    return UpdateKey(KEY, T1, **changes)


def embed_generated() -> KeyGenerated:
    return KeyGenerated(
        key_id=KEY,
        org_id=ORG,
        occurred_at=T0,
        name="Widget",
        type="embed",
        environment="live",
        allowed_origins=("https://a.example",),
        resource="tpl_1",
        secret_hash="a" * 64,
    )


# Each aspect: (its change, the event it records, what the state shows after).
ASPECTS: dict[str, tuple[dict[str, Any], KeyEvent, Callable[[Any], bool]]] = {
    "name": (
        {"name": "New"},
        KeyRenamed(**SUBJECT, name="New", previous_name="Bot"),
        lambda s: s.name == "New",
    ),
    "scopes": (
        {"scopes": ("a:read",)},
        KeyScopesChanged(**SUBJECT, scopes=("a:read",), previous_scopes=()),
        lambda s: s.scopes == ("a:read",),
    ),
    "metadata": (
        {"metadata": {"plan": "pro"}},
        KeyMetadataChanged(**SUBJECT, metadata={"plan": "pro"}, previous_metadata={}),
        lambda s: s.metadata == {"plan": "pro"},
    ),
    "rate_limits": (
        {"rate_limits": (BURST, DAILY)},
        KeyRateLimitsChanged(**SUBJECT, rate_limits=(BURST, DAILY), previous_rate_limits=()),
        lambda s: s.rate_limits == (BURST, DAILY) and s.rate_limit is None,
    ),
    "credits": (
        {"credits": CREDITS},
        KeyCreditsChanged(**SUBJECT, credits=CREDITS, previous_credits=None),
        lambda s: s.credits == CREDITS,
    ),
    "allowed_cidrs": (
        {"allowed_cidrs": ("10.0.0.0/8", "2001:db8::/32")},
        KeyIpAllowlistChanged(
            **SUBJECT, allowed_cidrs=("10.0.0.0/8", "2001:db8::/32"), previous_allowed_cidrs=()
        ),
        lambda s: s.allowed_cidrs == ("10.0.0.0/8", "2001:db8::/32"),
    ),
    "expires_at": (
        {"expires_at": T1 + timedelta(days=1)},
        KeyExpiryChanged(**SUBJECT, expires_at=T1 + timedelta(days=1), previous_expires_at=None),
        lambda s: s.expires_at == T1 + timedelta(days=1),
    ),
    "identity_id": (
        {"identity_id": "cus_42"},
        KeyIdentityChanged(**SUBJECT, identity_id="cus_42", previous_identity_id=None),
        lambda s: s.identity_id == "cus_42",
    ),
}


@pytest.mark.parametrize("aspect", ASPECTS)
@pytest.mark.parametrize("history", [[generated()], [generated(), disabled()]])
def test_each_aspect_is_its_own_event_with_before_and_after(
    aspect: str, history: list[KeyEvent]
) -> None:
    change, expected, shows = ASPECTS[aspect]
    state = given(*history).when(update(**change)).then(expected)
    assert state is not None and shows(state)
    assert state.version == len(history) + 1 and state.updated_at == T1
    assert state.status == fold(history).status  # type: ignore[union-attr]


@pytest.mark.parametrize("aspect", ASPECTS)
def test_an_aspect_given_with_its_current_value_writes_nothing(aspect: str) -> None:
    change, event, _ = ASPECTS[aspect]
    given(generated(), event.model_copy(update={"occurred_at": T0})).when(
        update(**change)
    ).then_nothing()


def test_nothing_given_writes_nothing() -> None:
    given(generated()).when(update()).then_nothing()


def test_several_aspects_are_several_events_in_a_fixed_order() -> None:
    change = {**ASPECTS["identity_id"][0], **ASPECTS["scopes"][0], **ASPECTS["name"][0]}
    state = (
        given(generated())
        .when(update(**change))
        .then(ASPECTS["name"][1], ASPECTS["scopes"][1], ASPECTS["identity_id"][1])
    )
    assert state is not None and state.version == 4


@pytest.mark.parametrize("terminal", [revoked, expired])
@pytest.mark.parametrize("aspect", ASPECTS)
def test_terminal_keys_are_not_mutable(aspect: str, terminal: Callable[[], KeyEvent]) -> None:
    given(generated(), terminal()).when(update(**ASPECTS[aspect][0])).then_refused(
        "key_not_mutable"
    )


def test_a_key_past_its_expiry_cannot_be_brought_back_by_a_new_expiry() -> None:
    given(generated(expires_at=T0 + timedelta(minutes=1))).when(
        update(expires_at=T1 + timedelta(days=30))
    ).then_refused("key_not_mutable")


def test_expiry_may_be_shortened_or_removed() -> None:
    later, sooner = T1 + timedelta(days=90), T1 + timedelta(days=1)
    _, state = (
        given(generated(expires_at=later))
        .when(update(expires_at=sooner))
        .then_one(KeyExpiryChanged)
    )
    assert state.expires_at == sooner
    event, state = (
        given(generated(expires_at=later)).when(update(expires_at=None)).then_one(KeyExpiryChanged)
    )
    assert event.previous_expires_at == later and state.expires_at is None


@pytest.mark.parametrize("moment", [T1, T1 - timedelta(seconds=1)])
def test_expiry_in_the_past_is_refused(moment: Any) -> None:
    error = given(generated()).when(update(expires_at=moment)).then_refused("validation_error")
    assert error.details == [{"loc": ["expires_at"], "msg": error.message}]


def test_origins_change_on_embed_keys_only() -> None:
    origins = ("https://b.example",)
    given(embed_generated()).when(update(allowed_origins=origins)).then(
        KeyOriginsChanged(
            **SUBJECT, allowed_origins=origins, previous_allowed_origins=("https://a.example",)
        )
    )
    given(generated()).when(update(allowed_origins=origins)).then_refused("validation_error")


def test_a_refused_aspect_refuses_the_whole_change() -> None:
    given(generated()).when(update(name="New", expires_at=T0, scopes=("a:read",))).then_refused(
        "validation_error"
    )


def test_clearing_credits_and_identity() -> None:
    history = [generated(), ASPECTS["credits"][1], ASPECTS["identity_id"][1]]
    state = (
        given(*history)
        .when(update(credits=None, identity_id=None))
        .then(
            KeyCreditsChanged(**SUBJECT, credits=None, previous_credits=CREDITS),
            KeyIdentityChanged(**SUBJECT, identity_id=None, previous_identity_id="cus_42"),
        )
    )
    assert state is not None and state.credits is None and state.identity_id is None


def test_the_single_rate_limit_is_the_limit_named_default() -> None:
    old = generated().model_copy(update={"rate_limit": RateLimit(limit=5, window="1m")})
    state = fold([old])
    assert state is not None
    assert state.rate_limits == (NamedRateLimit(name="default", limit=5, window="1m"),)
    default = NamedRateLimit(name="default", limit=7, window="1s")
    event, state = (
        given(old).when(update(rate_limits=(default, BURST))).then_one(KeyRateLimitsChanged)
    )
    assert event.previous_rate_limits == (NamedRateLimit(name="default", limit=5, window="1m"),)
    assert state.rate_limit == RateLimit(limit=7, window="1s")


def test_evolve_refuses_change_events_after_the_end_or_out_of_place() -> None:
    origins = KeyOriginsChanged(
        **SUBJECT, allowed_origins=("https://b.example",), previous_allowed_origins=()
    )
    with pytest.raises(ImpossibleEvent):
        evolve(fold([generated()]), origins)  # a secret key has no origins
    for _, event, _ in ASPECTS.values():
        with pytest.raises(ImpossibleEvent):
            evolve(fold([generated(), revoked()]), event)


# -- credits: refills once per period (the sweeper's RefillCredits) --------------------

DAILY_REFILL = Credits(remaining=5, refill=CreditRefill(amount=50, interval="daily"))


def with_credits(credits: Credits) -> KeyGenerated:
    return generated().model_copy(update={"credits": credits})


def test_a_refill_is_written_once_per_period() -> None:
    next_day = T0 + timedelta(days=1)
    event, state = (
        given(with_credits(DAILY_REFILL))
        .when(RefillCredits(KEY, next_day))
        .then_one(KeyCreditsRefilled)
    )
    assert (event.remaining, event.period) == (50, "2026-01-02")
    assert state.credits == Credits(remaining=50, refill=DAILY_REFILL.refill)
    assert state.credits_version == 2 and state.credits_period == "2026-01-02"
    given(with_credits(DAILY_REFILL), event).when(
        RefillCredits(KEY, next_day + timedelta(hours=5))
    ).then_nothing()


def test_no_refill_within_the_period_the_credits_were_set_in() -> None:
    given(with_credits(DAILY_REFILL)).when(RefillCredits(KEY, T1)).then_nothing()


@pytest.mark.parametrize(
    "credits", [None, Credits(remaining=5)], ids=["no credits", "credits without refill"]
)
def test_no_refill_without_a_refill(credits: Credits | None) -> None:
    history = [generated()] if credits is None else [with_credits(credits)]
    given(*history).when(RefillCredits(KEY, T0 + timedelta(days=3))).then_nothing()


@pytest.mark.parametrize("terminal", [revoked, expired])
def test_terminal_keys_are_not_refilled(terminal: Callable[[], KeyEvent]) -> None:
    given(with_credits(DAILY_REFILL), terminal()).when(
        RefillCredits(KEY, T0 + timedelta(days=3))
    ).then_nothing()


def test_a_disabled_key_is_refilled() -> None:
    given(with_credits(DAILY_REFILL), disabled()).when(
        RefillCredits(KEY, T0 + timedelta(days=3))
    ).then_one(KeyCreditsRefilled)


def test_setting_credits_tags_the_balance_with_its_version() -> None:
    state = fold([with_credits(DAILY_REFILL)])
    assert state is not None and state.credits_version == 1
    _, state = (
        given(with_credits(DAILY_REFILL))
        .when(update(credits=Credits(remaining=9)))
        .then_one(KeyCreditsChanged)
    )
    assert state.credits_version == 2 and state.credits_period is None
    _, state = (
        given(with_credits(DAILY_REFILL)).when(update(credits=None)).then_one(KeyCreditsChanged)
    )
    assert state.credits is None and state.credits_version == 2


def test_a_refill_of_a_key_without_one_is_impossible() -> None:
    refill = KeyCreditsRefilled(key_id=KEY, org_id=ORG, occurred_at=T1, remaining=1, period="x")
    with pytest.raises(ImpossibleEvent):
        evolve(fold([generated()]), refill)


@pytest.mark.parametrize(
    ("refill", "at", "period", "next_start"),
    [
        (
            CreditRefill(amount=1, interval="daily"),
            "2026-03-31T23:59:59",
            "2026-03-31",
            "2026-04-01",
        ),
        (
            CreditRefill(amount=1, interval="monthly"),
            "2026-03-01T00:00:00",
            "2026-03",
            "2026-04-01",
        ),
        (
            CreditRefill(amount=1, interval="monthly", day=15),
            "2026-03-14T12:00:00",
            "2026-02",
            "2026-03-15",
        ),
        (
            CreditRefill(amount=1, interval="monthly", day=15),
            "2026-03-15T00:00:00",
            "2026-03",
            "2026-04-15",
        ),
        (
            CreditRefill(amount=1, interval="monthly", day=28),
            "2026-01-02T00:00:00",
            "2025-12",
            "2026-01-28",
        ),
        (
            CreditRefill(amount=1, interval="monthly", day=3),
            "2026-12-04T00:00:00",
            "2026-12",
            "2027-01-03",
        ),
    ],
)
def test_refill_periods(refill: CreditRefill, at: str, period: str, next_start: str) -> None:
    moment = datetime.fromisoformat(at).replace(tzinfo=UTC)
    assert period_of(refill, moment) == period
    assert next_period_start(refill, moment) == datetime.fromisoformat(next_start).replace(
        tzinfo=UTC
    )
