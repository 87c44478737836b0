"""The key lifecycle, row by row (SPEC §4): given events, when a command, then events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from events.models import (
    KeyDisabled,
    KeyEnabled,
    KeyEvent,
    KeyExpired,
    KeyGenerated,
    KeyRenamed,
    KeyRevoked,
    KeyRotated,
)
from service.domain.commands import (
    ActiveKeyQuota,
    Command,
    DisableKey,
    EnableKey,
    ExpireKey,
    GenerateKey,
    RenameKey,
    RevokeKey,
    RotateKey,
)
from service.domain.decider import decide, evolve, fold
from service.errors import KeyledgerError

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
KEY = "key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P"
ORG = "acme"
AT = {"key_id": KEY, "org_id": ORG}


def generated(expires_at: datetime | None = None) -> KeyGenerated:
    return KeyGenerated(
        **AT,
        occurred_at=T0,
        name="Bot",
        type="secret",
        environment="live",
        secret_hash="a" * 64,
        hint="sk_live_abcd…wxyz",
        expires_at=expires_at,
    )


def disabled() -> KeyDisabled:
    return KeyDisabled(**AT, occurred_at=T0, reason="paused")


def revoked() -> KeyRevoked:
    return KeyRevoked(**AT, occurred_at=T0, reason="leaked")


def expired() -> KeyExpired:
    return KeyExpired(**AT, occurred_at=T1, expires_at=T0 + timedelta(minutes=1))


def then(given: list[KeyEvent], when: Command) -> list[KeyEvent]:
    return decide(when, fold(given))


def refused(given: list[KeyEvent], when: Command) -> str:
    with pytest.raises(KeyledgerError) as caught:
        then(given, when)
    return caught.value.code


def rotate(at: datetime = T1) -> RotateKey:
    return RotateKey(
        KEY,
        issued_at=at,
        grace_period=timedelta(hours=24),
        secret_hash="b" * 64,
        hint="sk_live_new0…0000",
    )


# GenerateKey


def test_generate_records_key_generated() -> None:
    command = GenerateKey(
        KEY,
        ORG,
        "Bot",
        "secret",
        "live",
        T0,
        secret_hash="a" * 64,
        quota=ActiveKeyQuota(active=9, limit=10),
    )
    [event] = decide(command, None)
    assert isinstance(event, KeyGenerated) and event.name == "Bot"
    assert fold([event]).status == "active"


def test_generate_at_the_active_limit_is_refused() -> None:
    command = GenerateKey(
        KEY, ORG, "Bot", "secret", "live", T0, quota=ActiveKeyQuota(active=10, limit=10)
    )
    with pytest.raises(KeyledgerError) as caught:
        decide(command, None)
    assert caught.value.code == "active_key_limit"


def test_generate_without_limit_ignores_count() -> None:
    command = GenerateKey(
        KEY, "_system", "Svc", "secret", "live", T0, quota=ActiveKeyQuota(active=500, limit=None)
    )
    assert len(decide(command, None)) == 1


def test_generate_on_existing_key_is_refused() -> None:
    assert refused([generated()], GenerateKey(KEY, ORG, "B", "secret", "live", T1)) == "key_exists"


# RenameKey


def test_rename_active_key() -> None:
    [event] = then([generated()], RenameKey(KEY, "Trading Bot", T1))
    assert event == KeyRenamed(**AT, occurred_at=T1, name="Trading Bot", previous_name="Bot")


def test_rename_disabled_key() -> None:
    [event] = then([generated(), disabled()], RenameKey(KEY, "New", T1))
    assert isinstance(event, KeyRenamed)


def test_rename_to_same_name_is_a_no_op() -> None:
    assert then([generated()], RenameKey(KEY, "Bot", T1)) == []


@pytest.mark.parametrize("terminal", [revoked, expired])
def test_rename_terminal_key_is_refused(terminal) -> None:
    assert refused([generated(), terminal()], RenameKey(KEY, "X", T1)) == "key_not_mutable"


def test_rename_key_past_expiry_is_refused_before_key_expired_is_written() -> None:
    given = [generated(expires_at=T0 + timedelta(minutes=5))]
    assert refused(given, RenameKey(KEY, "X", T1)) == "key_not_mutable"


# DisableKey / EnableKey


def test_disable_active_key() -> None:
    [event] = then([generated()], DisableKey(KEY, T1, reason="abuse"))
    assert event == KeyDisabled(**AT, occurred_at=T1, reason="abuse")
    assert fold([generated(), event]).status == "disabled"


def test_disable_disabled_key_is_a_no_op() -> None:
    assert then([generated(), disabled()], DisableKey(KEY, T1)) == []


@pytest.mark.parametrize("terminal", [revoked, expired])
def test_disable_terminal_key_is_refused(terminal) -> None:
    assert refused([generated(), terminal()], DisableKey(KEY, T1)) == "key_not_mutable"


def test_enable_disabled_key() -> None:
    command = EnableKey(KEY, T1, quota=ActiveKeyQuota(active=3, limit=10))
    [event] = then([generated(), disabled()], command)
    assert event == KeyEnabled(**AT, occurred_at=T1)
    state = fold([generated(), disabled(), event])
    assert state.status == "active" and state.disabled_at is None


def test_enable_active_key_is_a_no_op() -> None:
    assert then([generated()], EnableKey(KEY, T1)) == []


def test_enable_at_the_active_limit_is_refused() -> None:
    command = EnableKey(KEY, T1, quota=ActiveKeyQuota(active=10, limit=10))
    assert refused([generated(), disabled()], command) == "active_key_limit"


@pytest.mark.parametrize("terminal", [revoked, expired])
def test_enable_terminal_key_is_refused(terminal) -> None:
    assert refused([generated(), terminal()], EnableKey(KEY, T1)) == "key_not_mutable"


# RevokeKey


@pytest.mark.parametrize("given", [[generated()], [generated(), disabled()]])
def test_revoke_active_or_disabled_key(given) -> None:
    [event] = then(given, RevokeKey(KEY, "compromised", T1))
    assert event == KeyRevoked(**AT, occurred_at=T1, reason="compromised")
    state = fold([*given, event])
    assert state.status == "revoked" and state.revoked_at == T1


def test_revoke_revoked_key_is_a_no_op() -> None:
    assert then([generated(), revoked()], RevokeKey(KEY, "other", T1)) == []


def test_revoke_expired_key_records_the_stronger_statement() -> None:
    [event] = then([generated(), expired()], RevokeKey(KEY, "leaked", T1))
    assert isinstance(event, KeyRevoked)
    assert fold([generated(), expired(), event]).status == "revoked"


# RotateKey


def test_rotate_keeps_the_old_secret_for_the_grace_period() -> None:
    [event] = then([generated()], rotate())
    assert isinstance(event, KeyRotated)
    assert event.previous_valid_until == T1 + timedelta(hours=24)
    state = fold([generated(), event])
    assert state.secret_hash == "b" * 64
    assert state.previous_secret_hash == "a" * 64
    assert state.status == "active" and state.version == 2


def test_rotate_disabled_key_stays_disabled() -> None:
    state = fold([generated(), disabled(), *then([generated(), disabled()], rotate())])
    assert state.status == "disabled"


def test_rotate_carries_expiry_over() -> None:
    expires = T0 + timedelta(days=30)
    given = [generated(expires_at=expires)]
    state = fold([*given, *then(given, rotate())])
    assert state.expires_at == expires


@pytest.mark.parametrize("terminal", [revoked, expired])
def test_rotate_terminal_key_is_refused(terminal) -> None:
    assert refused([generated(), terminal()], rotate()) == "key_not_mutable"


# ExpireKey


def test_expire_after_expires_at() -> None:
    expires = T0 + timedelta(minutes=5)
    [event] = then([generated(expires_at=expires)], ExpireKey(KEY, T1))
    assert event == KeyExpired(**AT, occurred_at=T1, expires_at=expires)


def test_expire_disabled_key_after_expires_at() -> None:
    given = [generated(expires_at=T0 + timedelta(minutes=5)), disabled()]
    assert [type(e) for e in then(given, ExpireKey(KEY, T1))] == [KeyExpired]


def test_expire_before_expires_at_is_a_no_op() -> None:
    assert then([generated(expires_at=T1 + timedelta(days=1))], ExpireKey(KEY, T1)) == []


def test_expire_never_expiring_key_is_a_no_op() -> None:
    assert then([generated()], ExpireKey(KEY, T1)) == []


@pytest.mark.parametrize("terminal", [revoked, expired])
def test_expire_terminal_key_is_a_no_op(terminal) -> None:
    given = [generated(expires_at=T0 + timedelta(minutes=1)), terminal()]
    assert then(given, ExpireKey(KEY, T1)) == []


# Unknown keys and state


def test_command_on_unknown_key_is_not_found() -> None:
    with pytest.raises(KeyledgerError) as caught:
        decide(RenameKey(KEY, "X", T1), None)
    assert caught.value.code == "key_not_found"


def test_evolve_counts_versions_and_updates_timestamps() -> None:
    state = fold([generated(), disabled(), KeyEnabled(**AT, occurred_at=T1)])
    assert state.version == 3 and state.updated_at == T1 and state.created_at == T0


def test_evolve_refuses_event_before_generation() -> None:
    with pytest.raises(ValueError):
        evolve(None, disabled())


def test_status_at_reads_expired_past_expires_at() -> None:
    state = fold([generated(expires_at=T1)])
    assert state.status_at(T0) == "active"
    assert state.status_at(T1) == "expired"
