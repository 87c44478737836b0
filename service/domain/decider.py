"""The key lifecycle as a decider (the commands as callers see them: docs/api.md#commands).

``decide(command, state)`` returns the events a command produces, or raises
``KeyledgerError``; ``evolve(state, event)`` folds one event into the state.
Both are pure. An empty list means "nothing changes" (the command is a no-op).

| state \\ command | Rename | Disable | Enable | Revoke | Rotate | Expire |
|------------------|--------|---------|--------|--------|--------|--------|
| active           | event  | event   | no-op  | event  | event  | event* |
| disabled         | event  | no-op   | event  | event  | event  | event* |
| expired          | 409    | 409     | 409    | event  | 409    | event† |
| revoked          | 409    | 409     | 409    | no-op  | 409    | no-op  |

``*`` only once ``expires_at`` has passed; ``†`` when the key is past
``expires_at`` but ``KeyExpired`` is not yet written, else no-op.

``WarnExpiry`` (the sweeper's) writes ``KeyExpiringSoon`` for an active or
disabled key within its lead time of ``expires_at`` (created before that lead
time began), once per lead and ``expires_at``; anything else is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TypedDict, assert_never

from events.models import (
    KeyDisabled,
    KeyEnabled,
    KeyEvent,
    KeyExpired,
    KeyExpiringSoon,
    KeyGenerated,
    KeyRenamed,
    KeyRevoked,
    KeyRotated,
)
from events.vocabulary import TERMINAL_STATUSES, Status
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
    WarnExpiry,
)
from service.domain.state import KeyState, KeyStateChanges
from service.errors import KeyledgerError


class _Subject(TypedDict):
    """The fields every event about an existing key starts with."""

    key_id: str
    org_id: str
    occurred_at: datetime


def decide(command: Command, state: KeyState | None) -> list[KeyEvent]:
    """The events that ``command`` produces against ``state``."""
    if isinstance(command, GenerateKey):
        return _generate(command, state)
    if state is None:
        raise KeyledgerError("key_not_found", "no such key")
    now = command.issued_at
    status = state.status_at(now)
    base = _Subject(key_id=state.key_id, org_id=state.org_id, occurred_at=now)

    if isinstance(command, RevokeKey):
        if state.status == "revoked":
            return []
        return [KeyRevoked(**base, reason=command.reason, leak_url=command.leak_url)]
    if isinstance(command, ExpireKey):
        if state.status in TERMINAL_STATUSES or status != "expired" or state.expires_at is None:
            return []
        return [KeyExpired(**base, expires_at=state.expires_at)]
    if isinstance(command, WarnExpiry):
        return _warn(command, state, now)
    if status in TERMINAL_STATUSES:
        raise KeyledgerError("key_not_mutable", f"the key is {status}; only revoke is allowed")

    match command:
        case RenameKey(name=name):
            if name == state.name:
                return []
            return [KeyRenamed(**base, name=name, previous_name=state.name)]
        case DisableKey(reason=reason, leak_url=leak_url):
            if status == "disabled":
                return []
            return [KeyDisabled(**base, reason=reason, leak_url=leak_url)]
        case EnableKey(quota=quota):
            if status == "active":
                return []
            _check_quota(quota)
            return [KeyEnabled(**base)]
        case RotateKey():
            return [
                KeyRotated(
                    **base,
                    secret_hash=command.secret_hash,
                    hint=command.hint,
                    public_key=command.public_key,
                    previous_valid_until=now + command.grace_period,
                )
            ]
    assert_never(command)


def _generate(command: GenerateKey, state: KeyState | None) -> list[KeyEvent]:
    if state is not None:
        raise KeyledgerError("key_exists", "a key with this id exists")
    _check_quota(command.quota)
    return [
        KeyGenerated(
            key_id=command.key_id,
            org_id=command.org_id,
            occurred_at=command.issued_at,
            name=command.name,
            type=command.type,
            environment=command.environment,
            scopes=command.scopes,
            allowed_origins=command.allowed_origins,
            resource=command.resource,
            algorithm=command.algorithm,
            public_key=command.public_key,
            secret_hash=command.secret_hash,
            hint=command.hint,
            metadata=command.metadata,
            rate_limit=command.rate_limit,
            expires_at=command.expires_at,
        )
    ]


def _warn(command: WarnExpiry, state: KeyState, now: datetime) -> list[KeyEvent]:
    """``KeyExpiringSoon`` once per lead and ``expires_at``, while the warning is due.

    Only for a key that existed before the lead time began: a key made to live
    less than the lead (a one-hour key and a 7-day warning) is not warned.
    """
    expires_at = state.expires_at
    if (
        expires_at is None
        or state.status_at(now) in TERMINAL_STATUSES
        or now < expires_at - command.lead_time
        or state.created_at >= expires_at - command.lead_time
        or (command.lead, expires_at) in state.expiry_warnings
    ):
        return []
    return [
        KeyExpiringSoon(
            key_id=state.key_id,
            org_id=state.org_id,
            occurred_at=now,
            expires_at=expires_at,
            lead=command.lead,
        )
    ]


def _check_quota(quota: ActiveKeyQuota) -> None:
    if quota.exhausted:
        raise KeyledgerError(
            "active_key_limit",
            f"the org already has {quota.active} active keys in this environment "
            f"(limit {quota.limit}); disable or revoke one first",
            {"limit": quota.limit},
        )


class ImpossibleEvent(ValueError):
    """An event that ``decide`` could never have produced against this state.

    Such an event was not written by keyledger (a forged or corrupted row): a
    ``KeyEnabled`` after ``KeyRevoked`` would bring a revoked key back, a
    ``KeyDisabled`` naming another org would move a key between tenants. The
    fold refuses it, and every consumer sets the key aside (quarantine) rather
    than believe it; verification fails closed for that key.
    """


# The stored statuses each event may follow: exactly what ``decide`` produces
# (see the table above; an expiry not yet written still reads as active/disabled).
_MAY_FOLLOW: dict[type[KeyEvent], frozenset[Status]] = {
    KeyRenamed: frozenset({"active", "disabled"}),
    KeyDisabled: frozenset({"active"}),
    KeyEnabled: frozenset({"disabled"}),
    KeyRevoked: frozenset({"active", "disabled", "expired"}),
    KeyExpired: frozenset({"active", "disabled"}),
    KeyRotated: frozenset({"active", "disabled"}),
    KeyExpiringSoon: frozenset({"active", "disabled"}),
}


def _check_possible(state: KeyState | None, event: KeyEvent) -> KeyState | None:
    """``ImpossibleEvent`` unless ``event`` can follow ``state``; the state when it can."""
    if isinstance(event, KeyGenerated):
        if state is not None:
            raise ImpossibleEvent(f"KeyGenerated for {event.key_id}, which already exists")
        return None
    if state is None:
        raise ImpossibleEvent(f"{event.event_type} before KeyGenerated for {event.key_id}")
    if (event.key_id, event.org_id) != (state.key_id, state.org_id):
        raise ImpossibleEvent(f"{event.event_type} names another key or org than its stream")
    if state.status not in _MAY_FOLLOW[type(event)]:
        raise ImpossibleEvent(f"{event.event_type} cannot follow a {state.status} key")
    return state


def evolve(state: KeyState | None, event: KeyEvent) -> KeyState:
    """The state after ``event``; ``ImpossibleEvent`` if ``decide`` could not have made it."""
    state = _check_possible(state, event)
    if isinstance(event, KeyGenerated):
        return KeyState(
            key_id=event.key_id,
            org_id=event.org_id,
            name=event.name,
            type=event.type,
            environment=event.environment,
            status="active",
            scopes=tuple(event.scopes),
            allowed_origins=tuple(event.allowed_origins),
            resource=event.resource,
            algorithm=event.algorithm,
            public_key=event.public_key,
            secret_hash=event.secret_hash,
            hint=event.hint,
            metadata=dict(event.metadata),
            rate_limit=event.rate_limit,
            created_at=event.occurred_at,
            updated_at=event.occurred_at,
            expires_at=event.expires_at,
            version=1,
        )
    assert state is not None  # _check_possible refused every other case
    changes: KeyStateChanges = {"updated_at": event.occurred_at, "version": state.version + 1}
    match event:
        case KeyRenamed(name=name):
            changes["name"] = name
        case KeyDisabled():
            changes |= {"status": "disabled", "disabled_at": event.occurred_at}
        case KeyEnabled():
            changes |= {"status": "active", "disabled_at": None}
        case KeyRevoked():
            changes |= {"status": "revoked", "revoked_at": event.occurred_at}
        case KeyExpired():
            changes["status"] = "expired"
        case KeyExpiringSoon(lead=lead, expires_at=expires_at):
            # A warning, not a change of the key: only the version moves.
            changes["updated_at"] = state.updated_at
            changes["expiry_warnings"] = state.expiry_warnings | {(lead, expires_at)}
        case KeyRotated():
            changes |= {
                "secret_hash": event.secret_hash,
                "hint": event.hint,
                "public_key": event.public_key,
                "previous_secret_hash": state.secret_hash,
                "previous_public_key": state.public_key,
                "previous_valid_until": event.previous_valid_until,
            }
    return state.with_changes(**changes)


def fold(events: Iterable[KeyEvent], state: KeyState | None = None) -> KeyState | None:
    """The state after all ``events``, starting from ``state``."""
    for event in events:
        state = evolve(state, event)
    return state
