"""The key lifecycle as a decider (the commands as callers see them: docs/api.md#commands).

``decide(command, state)`` returns the events a command produces, or raises
``KeyledgerError``; ``evolve(state, event)`` folds one event into the state.
Both are pure. An empty list means "nothing changes" (the command is a no-op).

| state \\ command | Rename | Disable | Enable | Revoke | Rotate | Expire | Update  |
|------------------|--------|---------|--------|--------|--------|--------|---------|
| active           | event  | event   | no-op  | event  | event  | event* | events‡ |
| disabled         | event  | no-op   | event  | event  | event  | event* | events‡ |
| expired          | 409    | 409     | 409    | event  | 409    | event† | 409     |
| revoked          | 409    | 409     | 409    | no-op  | 409    | no-op  | 409     |

``*`` only once ``expires_at`` has passed; ``†`` when the key is past
``expires_at`` but ``KeyExpired`` is not yet written, else no-op; ``‡`` one
event per aspect whose value changes (``service.domain.key_changes``), none
when nothing changes.

``WarnExpiry`` (the sweeper's) writes ``KeyExpiringSoon`` for an active or
disabled key within its lead time of ``expires_at`` (created before that lead
time began), once per lead and ``expires_at``; anything else is a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import assert_never, get_args

from events.models import (
    Credits,
    IdentityConfigured,
    KeyChangeEvent,
    KeyCreditsChanged,
    KeyCreditsRefilled,
    KeyDisabled,
    KeyEnabled,
    KeyEvent,
    KeyExpired,
    KeyExpiringSoon,
    KeyGenerated,
    KeyOriginsChanged,
    KeyRenamed,
    KeyRevoked,
    KeyRotated,
    LogEvent,
    WebhookRegistered,
    WebhookRemoved,
)
from events.vocabulary import TERMINAL_STATUSES, Status
from service.domain.commands import (
    ActiveKeyQuota,
    Command,
    DisableKey,
    EnableKey,
    ExpireKey,
    GenerateKey,
    RefillCredits,
    RenameKey,
    RevokeKey,
    RotateKey,
    UpdateKey,
    WarnExpiry,
)
from service.domain.credit_periods import period_of
from service.domain.key_changes import Subject, change_fields, decide_update
from service.domain.state import KeyState, KeyStateChanges, default_limit, named_limits
from service.errors import KeyledgerError

_CHANGE_EVENTS: tuple[type[KeyChangeEvent], ...] = get_args(KeyChangeEvent)
_LIVE: frozenset[Status] = frozenset({"active", "disabled"})


def decide(command: Command, state: KeyState | None) -> list[KeyEvent]:
    """The events that ``command`` produces against ``state``."""
    if isinstance(command, GenerateKey):
        return _generate(command, state)
    if state is None:
        raise KeyledgerError("key_not_found", "no such key")
    now = command.issued_at
    status = state.status_at(now)
    base = Subject(key_id=state.key_id, org_id=state.org_id, occurred_at=now)

    if isinstance(command, RevokeKey):
        if state.status == "revoked":
            return []
        return [KeyRevoked(**base, reason=command.reason, leak_url=command.leak_url)]
    if isinstance(command, RefillCredits):
        return _refill(command, state)
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
        case UpdateKey():
            return decide_update(command, state, base)
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
            rate_limits=command.rate_limits,
            credits=command.credits,
            allowed_cidrs=command.allowed_cidrs,
            identity_id=command.identity_id,
        )
    ]


def _refill(command: RefillCredits, state: KeyState) -> list[KeyEvent]:
    """A refill once per period, for a live key whose credits have a refill."""
    credits = state.credits
    if state.status_at(command.issued_at) in TERMINAL_STATUSES:
        return []
    if credits is None or credits.refill is None:
        return []
    period = period_of(credits.refill, command.issued_at)
    if period == state.credits_period:
        return []
    return [
        KeyCreditsRefilled(
            key_id=state.key_id,
            org_id=state.org_id,
            occurred_at=command.issued_at,
            remaining=credits.refill.amount,
            period=period,
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


def _credits_set(credits: Credits | None, version: int, at: datetime) -> tuple[int, str | None]:
    """(``credits_version``, ``credits_period``) of a balance set by the event of ``version``."""
    refill = credits.refill if credits is not None else None
    return version, period_of(refill, at) if refill is not None else None


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
    KeyCreditsRefilled: frozenset({"active", "disabled"}),
    KeyExpiringSoon: frozenset({"active", "disabled"}),
}
_MAY_FOLLOW.update(dict.fromkeys(_CHANGE_EVENTS, _LIVE))


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
    if isinstance(event, KeyOriginsChanged) and state.type != "embed":
        raise ImpossibleEvent("KeyOriginsChanged on a key that is not an embed key")
    if isinstance(event, KeyCreditsRefilled) and (
        state.credits is None or state.credits.refill is None
    ):
        raise ImpossibleEvent("KeyCreditsRefilled for a key whose credits have no refill")
    return state


def evolve(state: KeyState | None, event: LogEvent) -> KeyState:
    """The state after ``event``; ``ImpossibleEvent`` if ``decide`` could not have made it."""
    if isinstance(event, IdentityConfigured | WebhookRegistered | WebhookRemoved):
        # An identity's or a webhook endpoint's event has a stream of its own; in a key's
        # stream it is poison.
        raise ImpossibleEvent(f"{event.event_type} in the stream of key {event.key_id}")
    state = _check_possible(state, event)
    if isinstance(event, KeyGenerated):
        credits_version, credits_period = _credits_set(event.credits, 1, event.occurred_at)
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
            # Either form may be given; each is derived from the other when absent.
            rate_limit=event.rate_limit or default_limit(tuple(event.rate_limits)),
            rate_limits=tuple(event.rate_limits) or named_limits(event.rate_limit),
            credits=event.credits,
            allowed_cidrs=tuple(event.allowed_cidrs),
            identity_id=event.identity_id,
            credits_version=credits_version if event.credits is not None else 0,
            credits_period=credits_period,
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
        case KeyCreditsRefilled(remaining=remaining, period=period):
            assert state.credits is not None  # _check_possible refused a key without credits
            changes |= {
                "credits": Credits(remaining=remaining, refill=state.credits.refill),
                "credits_version": state.version + 1,
                "credits_period": period,
            }
        case KeyCreditsChanged(credits=credits):
            changes |= change_fields(event)
            version, set_in = _credits_set(credits, state.version + 1, event.occurred_at)
            changes |= {"credits_version": version, "credits_period": set_in}
        case _:
            changes |= change_fields(event)
    return state.with_changes(**changes)


def fold(events: Iterable[LogEvent], state: KeyState | None = None) -> KeyState | None:
    """The state after all ``events``, starting from ``state``."""
    for event in events:
        state = evolve(state, event)
    return state
