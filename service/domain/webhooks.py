"""Webhook endpoints as a decider: registration and removal are events in the one log.

An endpoint's events are a stream of their own, named by the endpoint's id
(``wh_…``, ``events.models.is_webhook_stream``), never a key's.
``decide_webhook`` answers the events a command makes; ``evolve_webhook``
folds one into the state. Both are pure. The signing secret is no part of
any of this: it is kept sealed outside the log (``service.webhooks``).

| state \\ command | RegisterWebhook       | RemoveWebhook                  |
|------------------|-----------------------|--------------------------------|
| none             | ``WebhookRegistered`` | ``webhook_not_found``          |
| registered       | (impossible)          | ``WebhookRemoved``             |
| removed          | (impossible)          | nothing (removing is idempotent) |

An endpoint of another org is, for its caller, none.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from events.models import (
    EVENT_TYPES,
    WEBHOOK_EVENT_TYPES,
    WebhookEvent,
    WebhookRegistered,
    WebhookRemoved,
)
from service.errors import KeyledgerError


class ImpossibleWebhookEvent(ValueError):
    """A webhook event that ``decide_webhook`` could not have made after the state."""


@dataclass(frozen=True, slots=True)
class RegisterWebhook:
    """Register a new endpoint (``webhook_id`` is fresh) for ``org_id``'s events."""

    org_id: str
    webhook_id: str
    url: str
    event_types: tuple[str, ...]
    issued_at: datetime


@dataclass(frozen=True, slots=True)
class RemoveWebhook:
    """Stop sending ``org_id``'s events to endpoint ``webhook_id``."""

    org_id: str
    webhook_id: str
    issued_at: datetime


WebhookCommand = RegisterWebhook | RemoveWebhook
# What an endpoint can be sent: every event type but those about endpoints themselves.
DELIVERED_EVENT_TYPES = tuple(t for t in EVENT_TYPES if t not in WEBHOOK_EVENT_TYPES)


def subscribed_event_types(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` without repeats, if each can be sent to endpoints; else ``unknown_event_type``.

    The message tells an event type that exists but is never sent (those
    about endpoints) from a name that is no event type at all.
    """
    known = ", ".join(DELIVERED_EVENT_TYPES)
    for index, name in enumerate(names):
        if name in WEBHOOK_EVENT_TYPES:
            raise KeyledgerError(
                "unknown_event_type",
                f"event_types[{index}] is an event type, but events about webhook endpoints"
                f" are not sent to endpoints; subscribe to any of: {known}",
            )
        if name not in DELIVERED_EVENT_TYPES:
            raise KeyledgerError(
                "unknown_event_type",
                f"event_types[{index}] is not an event type; known: {known}",
            )
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True, slots=True)
class WebhookState:
    """An endpoint after its last event (``version`` 0: registered before endpoints had
    events, its stream starts at its removal)."""

    webhook_id: str
    org_id: str
    url: str
    event_types: tuple[str, ...]
    registered_at: datetime
    removed_at: datetime | None
    version: int

    @property
    def removed(self) -> bool:
        """Whether the endpoint was removed."""
        return self.removed_at is not None


def decide_webhook(command: WebhookCommand, state: WebhookState | None) -> list[WebhookEvent]:
    """The events ``command`` makes after ``state``; ``webhook_not_found`` for an
    endpoint the org does not have."""
    if state is not None and state.org_id != command.org_id:
        state = None  # another org's endpoint does not exist for this caller
    if isinstance(command, RegisterWebhook):
        if state is not None:
            raise ImpossibleWebhookEvent("a new endpoint's id is already taken")
        return [
            WebhookRegistered(
                key_id=command.webhook_id,
                org_id=command.org_id,
                occurred_at=command.issued_at,
                webhook_id=command.webhook_id,
                url=command.url,
                event_types=command.event_types,
            )
        ]
    if state is None:
        raise KeyledgerError("webhook_not_found", "no such webhook")
    if state.removed:
        return []
    return [
        WebhookRemoved(
            key_id=command.webhook_id,
            org_id=command.org_id,
            occurred_at=command.issued_at,
            webhook_id=command.webhook_id,
        )
    ]


def evolve_webhook(state: WebhookState | None, event: WebhookEvent) -> WebhookState:
    """The endpoint after ``event``; ``ImpossibleWebhookEvent`` if it cannot follow ``state``."""
    if event.key_id != event.webhook_id:
        raise ImpossibleWebhookEvent(f"{event.event_type} on another stream than its endpoint's")
    if state is not None and (state.webhook_id, state.org_id) != (event.webhook_id, event.org_id):
        raise ImpossibleWebhookEvent(f"{event.event_type} names another endpoint or org")
    if isinstance(event, WebhookRegistered):
        if state is not None:
            raise ImpossibleWebhookEvent("WebhookRegistered for an endpoint already registered")
        return WebhookState(
            webhook_id=event.webhook_id,
            org_id=event.org_id,
            url=event.url,
            event_types=tuple(event.event_types),
            registered_at=event.occurred_at,
            removed_at=None,
            version=1,
        )
    if state is None or state.removed:
        raise ImpossibleWebhookEvent("WebhookRemoved for an endpoint not registered or removed")
    return replace(state, removed_at=event.occurred_at, version=state.version + 1)


def fold_webhook(
    events: Iterable[WebhookEvent], state: WebhookState | None = None
) -> WebhookState | None:
    """The endpoint after all ``events``, starting from ``state``."""
    for event in events:
        state = evolve_webhook(state, event)
    return state
