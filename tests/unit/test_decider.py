"""The key lifecycle (``service.domain.decider``), as given / when / then.

The first test is the lifecycle table itself, cell by cell; the rest spell out
what each event carries and what the state becomes.
"""

from __future__ import annotations

from collections.abc import Callable
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
from events.vocabulary import Status
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
from service.domain.decider import ImpossibleEvent, decide, evolve, fold
from service.errors import KeyledgerError
from tests.support.decider_spec import given

T0 = datetime(2026, 1, 1, tzinfo=UTC)
T1 = T0 + timedelta(hours=1)
KEY = "key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P"
ORG = "acme"


# -- events ----------------------------------------------------------------------


def generated(expires_at: datetime | None = None) -> KeyGenerated:
    return KeyGenerated(
        key_id=KEY,
        org_id=ORG,
        occurred_at=T0,
        name="Bot",
        type="secret",
        environment="live",
        secret_hash="a" * 64,
        hint="sk_live_abcd…wxyz",
        expires_at=expires_at,
    )


def disabled() -> KeyDisabled:
    return KeyDisabled(key_id=KEY, org_id=ORG, occurred_at=T0, reason="paused")


def revoked() -> KeyRevoked:
    return KeyRevoked(key_id=KEY, org_id=ORG, occurred_at=T0, reason="leaked")


def expired() -> KeyExpired:
    return KeyExpired(key_id=KEY, org_id=ORG, occurred_at=T1, expires_at=T0 + timedelta(minutes=1))


# -- commands --------------------------------------------------------------------


def generate(org: str = ORG, quota: ActiveKeyQuota | None = None) -> GenerateKey:
    return GenerateKey(
        KEY,
        org,
        "Bot",
        "secret",
        "live",
        T0,
        secret_hash="a" * 64,
        quota=quota or ActiveKeyQuota(active=0, limit=None),
    )


def rotate(at: datetime = T1) -> RotateKey:
    return RotateKey(
        KEY,
        issued_at=at,
        grace_period=timedelta(hours=24),
        secret_hash="b" * 64,
        hint="sk_live_new0…0000",
    )


# -- the lifecycle table -----------------------------------------------------------

# A key in each status at T1. None of them has an ``expires_at``, so Expire is a
# no-op in every row here; the cells that expire (``*``, ``†``) are under ExpireKey.
STATES: dict[Status, list[KeyEvent]] = {
    "active": [generated()],
    "disabled": [generated(), disabled()],
    "expired": [generated(), expired()],
    "revoked": [generated(), revoked()],
}
COMMANDS: dict[str, tuple[Callable[[], Command], type[KeyEvent]]] = {
    "Rename": (lambda: RenameKey(KEY, "Renamed", T1), KeyRenamed),
    "Disable": (lambda: DisableKey(KEY, T1), KeyDisabled),
    "Enable": (lambda: EnableKey(KEY, T1), KeyEnabled),
    "Revoke": (lambda: RevokeKey(KEY, "compromised", T1), KeyRevoked),
    "Rotate": (rotate, KeyRotated),
    "Expire": (lambda: ExpireKey(KEY, T1), KeyExpired),
}
EVENT, NO_OP, REFUSED = "event", "no-op", "409"
# fmt: off
TABLE: dict[Status, tuple[str, ...]] = {
    #              Rename    Disable   Enable    Revoke    Rotate    Expire
    "active":   (EVENT,    EVENT,    NO_OP,    EVENT,    EVENT,    NO_OP),
    "disabled": (EVENT,    NO_OP,    EVENT,    EVENT,    EVENT,    NO_OP),
    "expired":  (REFUSED,  REFUSED,  REFUSED,  EVENT,    REFUSED,  NO_OP),
    "revoked":  (REFUSED,  REFUSED,  REFUSED,  NO_OP,    REFUSED,  NO_OP),
}
# fmt: on


@pytest.mark.parametrize(
    ("status", "command", "outcome"),
    [
        (status, command, row[column])
        for status, row in TABLE.items()
        for column, command in enumerate(COMMANDS)
    ],
)
def test_the_lifecycle_table(status: Status, command: str, outcome: str) -> None:
    make, recorded = COMMANDS[command]
    when = given(*STATES[status]).when(make())
    if outcome == REFUSED:
        when.then_refused("key_not_mutable")
    elif outcome == NO_OP:
        when.then_nothing()
    else:
        event, state = when.then_one(recorded)
        assert event.occurred_at == T1
        assert state.version == len(STATES[status]) + 1 and state.updated_at == T1


# -- GenerateKey -----------------------------------------------------------------


def test_generate_records_key_generated() -> None:
    event, state = (
        given().when(generate(quota=ActiveKeyQuota(active=9, limit=10))).then_one(KeyGenerated)
    )
    assert event.name == "Bot" and event.secret_hash == "a" * 64
    assert state.status == "active" and state.version == 1


def test_generate_at_the_active_limit_is_refused() -> None:
    given().when(generate(quota=ActiveKeyQuota(active=10, limit=10))).then_refused(
        "active_key_limit"
    )


def test_generate_without_limit_ignores_count() -> None:
    command = generate(org="_system", quota=ActiveKeyQuota(active=500, limit=None))
    given().when(command).then_one(KeyGenerated)


def test_generate_on_existing_key_is_refused() -> None:
    given(generated()).when(generate()).then_refused("key_exists")


# -- RenameKey -------------------------------------------------------------------


def test_rename_active_key() -> None:
    given(generated()).when(RenameKey(KEY, "Trading Bot", T1)).then(
        KeyRenamed(key_id=KEY, org_id=ORG, occurred_at=T1, name="Trading Bot", previous_name="Bot")
    )


def test_rename_disabled_key() -> None:
    _, state = given(generated(), disabled()).when(RenameKey(KEY, "New", T1)).then_one(KeyRenamed)
    assert state.name == "New" and state.status == "disabled"


def test_rename_to_same_name_is_a_no_op() -> None:
    given(generated()).when(RenameKey(KEY, "Bot", T1)).then_nothing()


@pytest.mark.parametrize("terminal", [revoked, expired])
def test_rename_terminal_key_is_refused(terminal: Callable[[], KeyEvent]) -> None:
    given(generated(), terminal()).when(RenameKey(KEY, "X", T1)).then_refused("key_not_mutable")


def test_rename_key_past_expiry_is_refused_before_key_expired_is_written() -> None:
    given(generated(expires_at=T0 + timedelta(minutes=5))).when(
        RenameKey(KEY, "X", T1)
    ).then_refused("key_not_mutable")


# -- DisableKey / EnableKey ----------------------------------------------------------


def test_disable_active_key() -> None:
    state = (
        given(generated())
        .when(DisableKey(KEY, T1, reason="abuse"))
        .then(KeyDisabled(key_id=KEY, org_id=ORG, occurred_at=T1, reason="abuse"))
    )
    assert state is not None and state.status == "disabled" and state.disabled_at == T1


def test_disable_disabled_key_is_a_no_op() -> None:
    given(generated(), disabled()).when(DisableKey(KEY, T1)).then_nothing()


@pytest.mark.parametrize("terminal", [revoked, expired])
def test_disable_terminal_key_is_refused(terminal: Callable[[], KeyEvent]) -> None:
    given(generated(), terminal()).when(DisableKey(KEY, T1)).then_refused("key_not_mutable")


def test_enable_disabled_key() -> None:
    state = (
        given(generated(), disabled())
        .when(EnableKey(KEY, T1, quota=ActiveKeyQuota(active=3, limit=10)))
        .then(KeyEnabled(key_id=KEY, org_id=ORG, occurred_at=T1))
    )
    assert state is not None and state.status == "active" and state.disabled_at is None


def test_enable_active_key_is_a_no_op() -> None:
    given(generated()).when(EnableKey(KEY, T1)).then_nothing()


def test_enable_at_the_active_limit_is_refused() -> None:
    command = EnableKey(KEY, T1, quota=ActiveKeyQuota(active=10, limit=10))
    error = given(generated(), disabled()).when(command).then_refused("active_key_limit")
    assert error.details == {"limit": 10}


@pytest.mark.parametrize("terminal", [revoked, expired])
def test_enable_terminal_key_is_refused(terminal: Callable[[], KeyEvent]) -> None:
    given(generated(), terminal()).when(EnableKey(KEY, T1)).then_refused("key_not_mutable")


# -- RevokeKey -------------------------------------------------------------------


@pytest.mark.parametrize("history", [[generated()], [generated(), disabled()]])
def test_revoke_active_or_disabled_key(history: list[KeyEvent]) -> None:
    state = (
        given(*history)
        .when(RevokeKey(KEY, "compromised", T1))
        .then(KeyRevoked(key_id=KEY, org_id=ORG, occurred_at=T1, reason="compromised"))
    )
    assert state is not None and state.status == "revoked" and state.revoked_at == T1


def test_revoke_revoked_key_is_a_no_op() -> None:
    given(generated(), revoked()).when(RevokeKey(KEY, "other", T1)).then_nothing()


def test_revoke_expired_key_records_the_stronger_statement() -> None:
    _, state = given(generated(), expired()).when(RevokeKey(KEY, "leaked", T1)).then_one(KeyRevoked)
    assert state.status == "revoked"


# -- RotateKey -------------------------------------------------------------------


def test_rotate_keeps_the_old_secret_for_the_grace_period() -> None:
    event, state = given(generated()).when(rotate()).then_one(KeyRotated)
    assert event.previous_valid_until == T1 + timedelta(hours=24)
    assert state.secret_hash == "b" * 64
    assert state.previous_secret_hash == "a" * 64
    assert state.status == "active" and state.version == 2


def test_rotate_disabled_key_stays_disabled() -> None:
    _, state = given(generated(), disabled()).when(rotate()).then_one(KeyRotated)
    assert state.status == "disabled"


def test_rotate_carries_expiry_over() -> None:
    expires = T0 + timedelta(days=30)
    _, state = given(generated(expires_at=expires)).when(rotate()).then_one(KeyRotated)
    assert state.expires_at == expires


@pytest.mark.parametrize("terminal", [revoked, expired])
def test_rotate_terminal_key_is_refused(terminal: Callable[[], KeyEvent]) -> None:
    given(generated(), terminal()).when(rotate()).then_refused("key_not_mutable")


# -- ExpireKey (the * and † cells of the table) ------------------------------------------


def test_expire_after_expires_at() -> None:
    expires = T0 + timedelta(minutes=5)
    given(generated(expires_at=expires)).when(ExpireKey(KEY, T1)).then(
        KeyExpired(key_id=KEY, org_id=ORG, occurred_at=T1, expires_at=expires)
    )


def test_expire_disabled_key_after_expires_at() -> None:
    history = (generated(expires_at=T0 + timedelta(minutes=5)), disabled())
    _, state = given(*history).when(ExpireKey(KEY, T1)).then_one(KeyExpired)
    assert state.status == "expired"


def test_expire_before_expires_at_is_a_no_op() -> None:
    given(generated(expires_at=T1 + timedelta(days=1))).when(ExpireKey(KEY, T1)).then_nothing()


def test_expire_never_expiring_key_is_a_no_op() -> None:
    given(generated()).when(ExpireKey(KEY, T1)).then_nothing()


@pytest.mark.parametrize("terminal", [revoked, expired])
def test_expire_terminal_key_is_a_no_op(terminal: Callable[[], KeyEvent]) -> None:
    given(generated(expires_at=T0 + timedelta(minutes=1)), terminal()).when(
        ExpireKey(KEY, T1)
    ).then_nothing()


# -- unknown keys and the state ----------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_command_on_unknown_key_is_not_found(command: str) -> None:
    make, _ = COMMANDS[command]
    given().when(make()).then_refused("key_not_found")


def test_evolve_counts_versions_and_updates_timestamps() -> None:
    state = fold([generated(), disabled(), KeyEnabled(key_id=KEY, org_id=ORG, occurred_at=T1)])
    assert state is not None
    assert state.version == 3 and state.updated_at == T1 and state.created_at == T0


def test_evolve_refuses_event_before_generation() -> None:
    with pytest.raises(ValueError):
        evolve(None, disabled())


def test_status_at_reads_expired_past_expires_at() -> None:
    state = fold([generated(expires_at=T1)])
    assert state is not None
    assert state.status_at(T0) == "active"
    assert state.status_at(T1) == "expired"


# -- evolve refuses what decide could never have made (forged or corrupted rows) --------


def enabled() -> KeyEnabled:
    return KeyEnabled(key_id=KEY, org_id=ORG, occurred_at=T1)


def renamed() -> KeyRenamed:
    return KeyRenamed(key_id=KEY, org_id=ORG, occurred_at=T1, name="New", previous_name="Bot")


@pytest.mark.parametrize(
    ("history", "impossible"),
    [
        ([generated(), revoked()], enabled()),  # a revoked key brought back
        ([generated(), revoked()], disabled()),
        ([generated(), revoked()], renamed()),
        ([generated(), revoked()], expired()),
        ([generated(), revoked()], revoked()),  # decide answers a second revoke with nothing
        ([generated(), expired()], enabled()),
        ([generated(), expired()], renamed()),
        ([generated()], enabled()),  # an active key is not enabled again
        ([generated(), disabled()], disabled()),
        ([generated()], generated()),  # a key is generated once
    ],
)
def test_evolve_refuses_an_impossible_transition(
    history: list[KeyEvent], impossible: KeyEvent
) -> None:
    state = fold(history)
    with pytest.raises(ImpossibleEvent):
        evolve(state, impossible)


def test_evolve_refuses_an_event_naming_another_org_or_key() -> None:
    state = fold([generated()])
    with pytest.raises(ImpossibleEvent):
        evolve(state, KeyDisabled(key_id=KEY, org_id="other", occurred_at=T1, reason="x"))
    other_key = "key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7Q"
    with pytest.raises(ImpossibleEvent):
        evolve(state, KeyDisabled(key_id=other_key, org_id=ORG, occurred_at=T1, reason="x"))


def test_every_event_decide_makes_is_possible() -> None:
    """The table of what may follow what is exactly decide's: its events always fold."""
    for history in ([generated()], [generated(), disabled()], [generated(), expired()]):
        state = fold(history)
        assert state is not None
        for command, _ in COMMANDS.values():
            try:
                events = decide(command(), state)
            except KeyledgerError:
                continue
            fold(events, state)
