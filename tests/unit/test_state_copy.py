"""``KeyState.with_changes``, the decider's cheap copy, against ``dataclasses.replace``."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from events.models import RateLimit
from service.domain.state import KeyState

AT = datetime(2030, 1, 1, tzinfo=UTC)


def a_state() -> KeyState:
    return KeyState(
        key_id="key_01",
        org_id="acme",
        name="ci",
        type="secret",
        environment="live",
        status="active",
        scopes=("orders:read",),
        allowed_origins=(),
        resource=None,
        algorithm=None,
        public_key=None,
        secret_hash="ab" * 32,
        hint="sk_live_AAAA…ZZZZ",
        metadata={"team": 1},
        rate_limit=RateLimit(limit=10, window="1s"),
        created_at=AT,
        updated_at=AT,
        expires_at=AT + timedelta(days=1),
        version=3,
        position=7,
    )


def test_with_changes_equals_dataclasses_replace_and_leaves_the_original() -> None:
    state = a_state()
    changes = {"status": "disabled", "disabled_at": AT, "version": 4, "position": 9}
    changed = state.with_changes(**changes)
    assert changed == dataclasses.replace(state, **changes)
    assert changed is not state
    assert (state.status, state.version, state.disabled_at) == ("active", 3, None)
    assert state.with_changes() == state


def test_with_changes_keeps_the_state_frozen_and_refuses_unknown_fields() -> None:
    changed = a_state().with_changes(name="renamed")
    with pytest.raises(dataclasses.FrozenInstanceError):
        changed.name = "again"  # type: ignore[misc]
    with pytest.raises(TypeError, match="no_such_field"):
        a_state().with_changes(no_such_field=1)
