"""Changes to a key after issue (``UpdateKey``): one event per aspect, before and after.

``decide_update`` turns an ``UpdateKey`` into the events for the aspects it
really changes (an aspect given with its current value writes nothing), in a
fixed order; ``change_fields`` says what each change event does to the state.
Both pure, called by ``service.domain.decider``.
"""

from __future__ import annotations

from datetime import datetime
from typing import TypedDict, assert_never

from events.models import (
    KeyChangeEvent,
    KeyCreditsChanged,
    KeyEvent,
    KeyExpiryChanged,
    KeyIdentityChanged,
    KeyIpAllowlistChanged,
    KeyMetadataChanged,
    KeyOriginsChanged,
    KeyRateLimitsChanged,
    KeyRenamed,
    KeyScopesChanged,
)
from service.domain.commands import KEEP, UpdateKey
from service.domain.state import KeyState, KeyStateChanges, default_limit
from service.errors import KeyledgerError


class Subject(TypedDict):
    """The fields every event about an existing key starts with."""

    key_id: str
    org_id: str
    occurred_at: datetime


def _refuse(field: str, message: str) -> KeyledgerError:
    return KeyledgerError("validation_error", message, [{"loc": [field], "msg": message}])


def decide_update(command: UpdateKey, state: KeyState, base: Subject) -> list[KeyEvent]:
    """The events for each aspect ``command`` changes (none: a no-op)."""
    events: list[KeyEvent] = []
    if command.name is not KEEP and command.name != state.name:
        events.append(KeyRenamed(**base, name=command.name, previous_name=state.name))
    if command.scopes is not KEEP and command.scopes != state.scopes:
        events.append(KeyScopesChanged(**base, scopes=command.scopes, previous_scopes=state.scopes))
    if command.metadata is not KEEP and command.metadata != state.metadata:
        events.append(
            KeyMetadataChanged(**base, metadata=command.metadata, previous_metadata=state.metadata)
        )
    if command.rate_limits is not KEEP and command.rate_limits != state.rate_limits:
        events.append(
            KeyRateLimitsChanged(
                **base, rate_limits=command.rate_limits, previous_rate_limits=state.rate_limits
            )
        )
    if command.credits is not KEEP and command.credits != state.credits:
        events.append(
            KeyCreditsChanged(**base, credits=command.credits, previous_credits=state.credits)
        )
    if command.allowed_origins is not KEEP and command.allowed_origins != state.allowed_origins:
        if state.type != "embed":
            raise _refuse("allowed_origins", "allowed_origins is for embed keys only")
        events.append(
            KeyOriginsChanged(
                **base,
                allowed_origins=command.allowed_origins,
                previous_allowed_origins=state.allowed_origins,
            )
        )
    if command.allowed_cidrs is not KEEP and command.allowed_cidrs != state.allowed_cidrs:
        events.append(
            KeyIpAllowlistChanged(
                **base,
                allowed_cidrs=command.allowed_cidrs,
                previous_allowed_cidrs=state.allowed_cidrs,
            )
        )
    if command.expires_at is not KEEP and command.expires_at != state.expires_at:
        if command.expires_at is not None and command.expires_at <= command.issued_at:
            raise _refuse("expires_at", "expires_at must be in the future (or null for never)")
        events.append(
            KeyExpiryChanged(
                **base, expires_at=command.expires_at, previous_expires_at=state.expires_at
            )
        )
    if command.identity_id is not KEEP and command.identity_id != state.identity_id:
        events.append(
            KeyIdentityChanged(
                **base, identity_id=command.identity_id, previous_identity_id=state.identity_id
            )
        )
    return events


def change_fields(event: KeyChangeEvent) -> KeyStateChanges:
    """What ``event`` changes in a key's state (the version and ``updated_at`` aside)."""
    match event:
        case KeyScopesChanged(scopes=scopes):
            return {"scopes": tuple(scopes)}
        case KeyMetadataChanged(metadata=metadata):
            return {"metadata": dict(metadata)}
        case KeyRateLimitsChanged(rate_limits=limits):
            return {"rate_limits": tuple(limits), "rate_limit": default_limit(tuple(limits))}
        case KeyCreditsChanged(credits=credits):
            return {"credits": credits}
        case KeyOriginsChanged(allowed_origins=origins):
            return {"allowed_origins": tuple(origins)}
        case KeyIpAllowlistChanged(allowed_cidrs=cidrs):
            return {"allowed_cidrs": tuple(cidrs)}
        case KeyExpiryChanged(expires_at=expires_at):
            return {"expires_at": expires_at}
        case KeyIdentityChanged(identity_id=identity_id):
            return {"identity_id": identity_id}
    assert_never(event)
