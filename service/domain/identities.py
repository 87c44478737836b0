"""Identities as a decider: limits shared by every key of one customer.

An identity is named by the customer (``identity_id``, the id in their own
system) and belongs to one org; its events are a stream of their own
(``events.models.identity_stream_id``), never a key's. ``PUT`` sets the whole
identity at once: ``decide_identity`` answers one ``IdentityConfigured`` with
the values before and after, or nothing when nothing would change.
``evolve_identity`` folds an event into the state. Both are pure.

| state \\ command | ConfigureIdentity                         |
|------------------|-------------------------------------------|
| none             | ``IdentityConfigured`` (``existed`` false) |
| configured       | ``IdentityConfigured``, or nothing if equal |
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from events.models import IdentityConfigured, NamedRateLimit, identity_stream_id


class ImpossibleIdentityEvent(ValueError):
    """An identity event that ``decide_identity`` could not have made after the state."""


@dataclass(frozen=True, slots=True)
class ConfigureIdentity:
    """Set an identity's shared rate limits and metadata (create it, or replace both)."""

    org_id: str
    identity_id: str
    issued_at: datetime
    rate_limits: tuple[NamedRateLimit, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def stream_id(self) -> str:
        """The identity's stream."""
        return identity_stream_id(self.org_id, self.identity_id)


@dataclass(frozen=True, slots=True)
class IdentityState:
    """An identity after its last event."""

    stream_id: str
    org_id: str
    identity_id: str
    rate_limits: tuple[NamedRateLimit, ...]
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    version: int
    position: int = 0


def decide_identity(
    command: ConfigureIdentity, state: IdentityState | None
) -> list[IdentityConfigured]:
    """The events ``command`` makes after ``state``: one, or none when nothing changes."""
    if (
        state is not None
        and state.rate_limits == command.rate_limits
        and state.metadata == command.metadata
    ):
        return []
    return [
        IdentityConfigured(
            key_id=command.stream_id,
            org_id=command.org_id,
            occurred_at=command.issued_at,
            identity_id=command.identity_id,
            rate_limits=command.rate_limits,
            previous_rate_limits=state.rate_limits if state is not None else (),
            metadata=dict(command.metadata),
            previous_metadata=dict(state.metadata) if state is not None else {},
            existed=state is not None,
        )
    ]


def evolve_identity(state: IdentityState | None, event: IdentityConfigured) -> IdentityState:
    """The identity after ``event``; ``ImpossibleIdentityEvent`` if it cannot follow ``state``."""
    if event.key_id != identity_stream_id(event.org_id, event.identity_id):
        raise ImpossibleIdentityEvent("IdentityConfigured on another stream than its identity's")
    if event.existed != (state is not None):
        raise ImpossibleIdentityEvent("IdentityConfigured does not say whether it existed")
    if state is not None and (state.stream_id, state.org_id) != (event.key_id, event.org_id):
        raise ImpossibleIdentityEvent("IdentityConfigured names another identity or org")
    return IdentityState(
        stream_id=event.key_id,
        org_id=event.org_id,
        identity_id=event.identity_id,
        rate_limits=tuple(event.rate_limits),
        metadata=dict(event.metadata),
        created_at=state.created_at if state is not None else event.occurred_at,
        updated_at=event.occurred_at,
        version=state.version + 1 if state is not None else 1,
    )


def fold_identity(
    events: Iterable[IdentityConfigured], state: IdentityState | None = None
) -> IdentityState | None:
    """The identity after all ``events``, starting from ``state``."""
    for event in events:
        state = evolve_identity(state, event)
    return state
