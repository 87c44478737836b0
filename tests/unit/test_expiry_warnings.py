"""``KeyExpiringSoon``: the decider writes each warning once; lead times as a setting."""

from __future__ import annotations

from datetime import timedelta

import pytest

from events.models import KeyDisabled, KeyExpired, KeyExpiringSoon, KeyRevoked
from service.domain.commands import WarnExpiry
from service.domain.durations import parse_lead_times
from service.settings import Settings, SettingsError
from tests.support.decider_spec import given
from tests.unit.test_decider import KEY, ORG, T0, generated

EXPIRES = T0 + timedelta(days=10)


def warn(lead: str, days: float, at_days: float) -> WarnExpiry:
    return WarnExpiry(
        key_id=KEY, lead=lead, lead_time=timedelta(days=days), issued_at=T0 + timedelta(at_days)
    )


def warning(lead: str, at_days: float, expires_at=EXPIRES) -> KeyExpiringSoon:  # type: ignore[no-untyped-def]
    return KeyExpiringSoon(
        key_id=KEY,
        org_id=ORG,
        occurred_at=T0 + timedelta(at_days),
        expires_at=expires_at,
        lead=lead,
    )


def test_a_key_within_the_lead_time_is_warned() -> None:
    state = given(generated(EXPIRES)).when(warn("7d", 7, 3.5)).then(warning("7d", 3.5))
    assert state is not None
    assert (state.status, state.version, state.updated_at) == ("active", 2, T0)
    assert state.expiry_warnings == {("7d", EXPIRES)}


def test_each_lead_is_warned_once() -> None:
    given(generated(EXPIRES), warning("7d", 3.5)).when(warn("7d", 7, 4)).then_nothing()
    # Another lead is another warning.
    given(generated(EXPIRES), warning("7d", 3.5)).when(warn("1d", 1, 9.5)).then(warning("1d", 9.5))


def test_no_warning_before_the_lead_time_or_without_expiry() -> None:
    given(generated(EXPIRES)).when(warn("7d", 7, 2)).then_nothing()
    given(generated(None)).when(warn("7d", 7, 2)).then_nothing()


def test_no_warning_for_keys_that_expired_or_were_revoked() -> None:
    expired = KeyExpired(key_id=KEY, org_id=ORG, occurred_at=EXPIRES, expires_at=EXPIRES)
    revoked = KeyRevoked(key_id=KEY, org_id=ORG, occurred_at=T0, reason="leaked")
    given(generated(EXPIRES), expired).when(warn("7d", 7, 11)).then_nothing()
    given(generated(EXPIRES), revoked).when(warn("7d", 7, 5)).then_nothing()
    # Past expires_at, even before KeyExpired is written: too late to warn.
    given(generated(EXPIRES)).when(warn("7d", 7, 10)).then_nothing()


def test_a_disabled_key_is_warned_too() -> None:
    disabled = KeyDisabled(key_id=KEY, org_id=ORG, occurred_at=T0)
    given(generated(EXPIRES), disabled).when(warn("1d", 1, 9.5)).then(warning("1d", 9.5))


def test_a_key_made_to_live_less_than_the_lead_is_not_warned() -> None:
    short = generated(T0 + timedelta(days=3))
    given(short).when(warn("7d", 7, 1)).then_nothing()
    # …but its shorter lead comes due as usual.
    state = (
        given(short)
        .when(warn("1d", 1, 2.5))
        .then(warning("1d", 2.5, expires_at=T0 + timedelta(days=3)))
    )
    assert state is not None


def test_a_new_expiry_is_warned_again() -> None:
    # Warnings are per expires_at: one for an earlier expiry does not count for this one.
    given(generated(EXPIRES), warning("7d", 3.5, EXPIRES - timedelta(days=1))).when(
        warn("7d", 7, 4)
    ).then(warning("7d", 4))


def test_lead_times_parse_longest_first() -> None:
    assert parse_lead_times("1d,7d, 12h") == (
        ("7d", timedelta(days=7)),
        ("1d", timedelta(days=1)),
        ("12h", timedelta(hours=12)),
    )
    assert parse_lead_times("none") == ()
    assert Settings.from_env({}).expiry_lead_times == (
        ("7d", timedelta(days=7)),
        ("1d", timedelta(days=1)),
    )


@pytest.mark.parametrize("value", ["", "7", "0d", "366d", "7d,", "1w", "-1d", "7d;1d", "１d"])
def test_bad_lead_times_are_refused_by_name(value: str) -> None:
    with pytest.raises(ValueError, match="lead time"):
        parse_lead_times(value)
    if value:
        with pytest.raises(SettingsError, match="KEYLEDGER_EXPIRY_WARNINGS"):
            Settings.from_env({"KEYLEDGER_EXPIRY_WARNINGS": value})
