"""Pure rules of authority: who sees ``_system``, which service-key secret still acts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from asyncpg.exceptions._base import DataError as ClientSideDataError

from service.domain.orgs import SYSTEM_ORG
from service.group_commit import error_for
from service.settings import Settings, SettingsError
from service.store.key_registry import CallerStanding
from service.verification.callers import Caller

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("scopes", "orgs", "sees_system"),
    [
        ({"admin"}, None, True),
        ({"admin"}, {"a"}, False),
        ({"admin"}, set(), False),
        ({"admin", "keys:write"}, {"a", "b"}, False),
        ({"keys:write", "keys:read", "audit:read", "keys:verify"}, None, False),
        ({"keys:read"}, {"a"}, False),
    ],
)
def test_system_needs_an_admin_without_an_org_list(
    scopes: set[str], orgs: set[str] | None, sees_system: bool
) -> None:
    caller = Caller("key_x", frozenset(scopes), None if orgs is None else frozenset(orgs))
    assert caller.can_see_org(SYSTEM_ORG) is sees_system


def test_org_lists_still_limit_ordinary_orgs() -> None:
    limited = Caller("key_x", frozenset({"admin"}), frozenset({"a"}))
    assert limited.can_see_org("a") and not limited.can_see_org("b")
    assert limited.has_scope("keys:write")  # admin implies every scope, within its orgs
    unlimited = Caller("key_y", frozenset({"keys:read"}), None)
    assert unlimited.can_see_org("b")


def standing(**changes: object) -> CallerStanding:
    values: dict[str, object] = {
        "status": "active",
        "expires_at": None,
        "secret_hash": "new",
        "previous_secret_hash": None,
        "previous_valid_until": None,
    }
    values.update(changes)
    return CallerStanding(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("record", "presented", "admitted"),
    [
        (standing(), "new", True),
        (standing(), None, True),
        (standing(), "other", False),
        (standing(status="revoked"), "new", False),
        (standing(status="disabled"), "new", False),
        (standing(status="expired"), "new", False),
        (standing(expires_at=NOW), "new", False),
        (standing(expires_at=NOW - timedelta(seconds=1)), None, False),
        (standing(expires_at=NOW + timedelta(seconds=1)), "new", True),
        (standing(previous_secret_hash="old", previous_valid_until=NOW), "old", False),
        (
            standing(previous_secret_hash="old", previous_valid_until=NOW + timedelta(hours=1)),
            "old",
            True,
        ),
        (
            standing(
                status="disabled",
                previous_secret_hash="old",
                previous_valid_until=NOW + timedelta(hours=1),
            ),
            "old",
            False,
        ),
    ],
)
def test_which_secret_of_a_service_key_may_still_act(
    record: CallerStanding, presented: str | None, admitted: bool
) -> None:
    assert record.admits(presented, NOW) is admitted


@pytest.mark.parametrize(
    ("exception", "code"),
    [
        (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"), "validation_error"),
        (asyncpg.CharacterNotInRepertoireError("invalid byte sequence"), "validation_error"),
        (asyncpg.DataError("invalid input for query argument $1"), "validation_error"),
        (ClientSideDataError("invalid input"), "validation_error"),
        (asyncpg.InterfaceError("connection is closed"), "unavailable"),
        (asyncpg.UniqueViolationError("duplicate"), "unavailable"),
        (RuntimeError("a bug"), "unavailable"),
        (KeyError("a bug"), "unavailable"),
        (TimeoutError(), "unavailable"),
        (asyncpg.LockNotAvailableError("lock timeout"), "unavailable"),
        (ConnectionResetError(), "unavailable"),
    ],
)
def test_what_a_failed_command_answers(exception: Exception, code: str) -> None:
    error = error_for(exception)
    assert error.code == code
    if code == "unavailable":
        assert error.details == {"retry_after": 1}
    assert "\ud800" not in error.message and "duplicate" not in error.message


def test_bounded_waits_have_defaults_and_refuse_nonsense() -> None:
    settings = Settings.from_env({})
    assert settings.append_lock_timeout_seconds == 5.0
    assert settings.db_command_timeout_seconds == 30.0
    configured = Settings.from_env(
        {
            "KEYLEDGER_APPEND_LOCK_TIMEOUT_SECONDS": "0.5",
            "KEYLEDGER_DB_COMMAND_TIMEOUT_SECONDS": "12",
        }
    )
    assert configured.append_lock_timeout_seconds == 0.5
    assert configured.db_command_timeout_seconds == 12
    for name in ("KEYLEDGER_APPEND_LOCK_TIMEOUT_SECONDS", "KEYLEDGER_DB_COMMAND_TIMEOUT_SECONDS"):
        for value in ("0", "-1", "soon"):
            with pytest.raises(SettingsError):
                Settings.from_env({name: value})
