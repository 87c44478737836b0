"""The event vocabulary of keyledger.

Every change to a key is one of these frozen models. They are shared by the
event store, the projections, the outbox relay and external subscribers, so
this module depends on nothing but pydantic.

A *domain event* (``KeyGenerated``, ``KeyRevoked``…) carries the key it is
about, when it happened and its own facts. The *envelope* adds what the log
knows: its global position, stream version, actor and hash.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any, ClassVar
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from keyledger_client.events.vocabulary import (
    Algorithm,
    Environment,
    KeyType,
    RateWindow,
    RefillInterval,
    RevokeReason,
)


class _Frozen(BaseModel):
    # extra="ignore": an event written by a newer keyledger still decodes here.
    model_config = ConfigDict(frozen=True, extra="ignore")


class RateLimit(_Frozen):
    """A key's own request budget, enforced at verification."""

    limit: Annotated[int, Field(ge=1)]
    window: RateWindow


class NamedRateLimit(_Frozen):
    """One of a key's (or an identity's) named request budgets: ``limit`` per ``window``."""

    name: str
    limit: Annotated[int, Field(ge=1)]
    window: RateWindow


class CreditRefill(_Frozen):
    """How a key's credits are topped up: back to ``amount`` every day, or every month
    on ``day`` (1-28; the 1st when not given)."""

    amount: Annotated[int, Field(ge=1)]
    interval: RefillInterval
    day: Annotated[int, Field(ge=1, le=28)] | None = None


class Credits(_Frozen):
    """A key's remaining uses, as last set by a command or a refill."""

    remaining: Annotated[int, Field(ge=0)]
    refill: CreditRefill | None = None


class Actor(_Frozen):
    """Who caused an event and on whose behalf."""

    id: str
    on_behalf_of: str | None = None
    request_id: str | None = None


class DomainEvent(_Frozen):
    """Base of every key event: the key it concerns and when it happened."""

    event_type: ClassVar[str]
    schema_version: ClassVar[int] = 1

    key_id: str
    org_id: str
    occurred_at: datetime

    def data(self) -> dict[str, Any]:
        """The event's own facts, as they appear in the envelope's ``data``."""
        return self.model_dump(mode="json", exclude={"key_id", "org_id", "occurred_at"})


class KeyGenerated(DomainEvent):
    event_type: ClassVar[str] = "KeyGenerated"

    name: str
    type: KeyType
    environment: Environment
    scopes: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    resource: str | None = None
    algorithm: Algorithm | None = None
    public_key: str | None = None
    # HMAC-SHA256(pepper, secret) as hex; never the secret itself.
    secret_hash: str | None = None
    hint: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    rate_limit: RateLimit | None = None
    expires_at: datetime | None = None
    # Added with changes after issue; absent from older events, hence the defaults.
    rate_limits: tuple[NamedRateLimit, ...] = ()
    credits: Credits | None = None
    allowed_cidrs: tuple[str, ...] = ()
    identity_id: str | None = None


class KeyRenamed(DomainEvent):
    event_type: ClassVar[str] = "KeyRenamed"

    name: str
    previous_name: str


class _LeakReportable(DomainEvent):
    """An event a leak report may cause: it then names where the secret was found."""

    # Where a secret scanner found the key's secret (only when a leak report caused it).
    leak_url: str | None = None

    def data(self) -> dict[str, Any]:
        """As ``DomainEvent.data``, without ``leak_url`` when no leak report caused it."""
        data = super().data()
        if data.get("leak_url") is None:
            data.pop("leak_url", None)
        return data


class KeyDisabled(_LeakReportable):
    event_type: ClassVar[str] = "KeyDisabled"

    reason: str | None = None


class KeyEnabled(DomainEvent):
    event_type: ClassVar[str] = "KeyEnabled"


class KeyRevoked(_LeakReportable):
    event_type: ClassVar[str] = "KeyRevoked"

    reason: RevokeReason


class KeyRotated(DomainEvent):
    event_type: ClassVar[str] = "KeyRotated"

    secret_hash: str | None = None
    hint: str | None = None
    public_key: str | None = None
    # The replaced secret or public key keeps verifying until this instant.
    previous_valid_until: datetime


class KeyExpired(DomainEvent):
    event_type: ClassVar[str] = "KeyExpired"

    expires_at: datetime


# -- changes after issue: one event per aspect, carrying the value before and after ------


class KeyScopesChanged(DomainEvent):
    event_type: ClassVar[str] = "KeyScopesChanged"

    scopes: tuple[str, ...]
    previous_scopes: tuple[str, ...]


class KeyMetadataChanged(DomainEvent):
    event_type: ClassVar[str] = "KeyMetadataChanged"

    metadata: dict[str, Any]
    previous_metadata: dict[str, Any]


class KeyRateLimitsChanged(DomainEvent):
    event_type: ClassVar[str] = "KeyRateLimitsChanged"

    rate_limits: tuple[NamedRateLimit, ...]
    previous_rate_limits: tuple[NamedRateLimit, ...]


class KeyCreditsChanged(DomainEvent):
    event_type: ClassVar[str] = "KeyCreditsChanged"

    credits: Credits | None
    previous_credits: Credits | None


class KeyOriginsChanged(DomainEvent):
    event_type: ClassVar[str] = "KeyOriginsChanged"

    allowed_origins: tuple[str, ...]
    previous_allowed_origins: tuple[str, ...]


class KeyIpAllowlistChanged(DomainEvent):
    event_type: ClassVar[str] = "KeyIpAllowlistChanged"

    allowed_cidrs: tuple[str, ...]
    previous_allowed_cidrs: tuple[str, ...]


class KeyExpiryChanged(DomainEvent):
    event_type: ClassVar[str] = "KeyExpiryChanged"

    expires_at: datetime | None
    previous_expires_at: datetime | None


class KeyIdentityChanged(DomainEvent):
    event_type: ClassVar[str] = "KeyIdentityChanged"

    identity_id: str | None
    previous_identity_id: str | None


class KeyCreditsRefilled(DomainEvent):
    """A key's credits were topped up for a new refill period (by the sweeper, once per period)."""

    event_type: ClassVar[str] = "KeyCreditsRefilled"

    remaining: Annotated[int, Field(ge=0)]
    period: str


# Identity streams: an identity's events are a stream of their own, whose id (the
# envelope's ``key_id``) is derived from the org and the identity id. It can never
# be a key id (those start with ``key_``), and it is safe in a NATS subject whatever
# characters the customer's identity id holds.
IDENTITY_STREAM_PREFIX = "idn_"


def identity_stream_id(org_id: str, identity_id: str) -> str:
    """The stream id of identity ``identity_id`` of ``org_id``."""
    # Length-prefixed, so no other (org, identity) pair hashes the same text.
    digest = hashlib.sha256(f"{len(org_id)}:{org_id}{identity_id}".encode()).hexdigest()
    return IDENTITY_STREAM_PREFIX + digest[:32]


def is_identity_stream(stream_id: str) -> bool:
    """Whether ``stream_id`` (an envelope's ``key_id``) is an identity's stream."""
    return stream_id.startswith(IDENTITY_STREAM_PREFIX)


class IdentityConfigured(DomainEvent):
    """An identity's shared rate limits and metadata were set (created or replaced).

    Its ``key_id`` is the identity's stream id (``identity_stream_id``), not a key's."""

    event_type: ClassVar[str] = "IdentityConfigured"

    identity_id: str
    rate_limits: tuple[NamedRateLimit, ...]
    previous_rate_limits: tuple[NamedRateLimit, ...] = ()
    metadata: dict[str, Any] = Field(default_factory=dict)
    previous_metadata: dict[str, Any] = Field(default_factory=dict)
    # False for the identity's first event (there was nothing before it).
    existed: bool = False


IdentityEvent = IdentityConfigured


# Webhook endpoint streams: an endpoint's events are a stream of their own, whose id
# (the envelope's ``key_id``) is the endpoint's id, ``wh_`` + a ULID: never a key id
# (``key_``) nor an identity's stream (``idn_``), and safe in a NATS subject.
WEBHOOK_STREAM_PREFIX = "wh_"


def is_webhook_stream(stream_id: str) -> bool:
    """Whether ``stream_id`` (an envelope's ``key_id``) is a webhook endpoint's stream."""
    return stream_id.startswith(WEBHOOK_STREAM_PREFIX)


class WebhookRegistered(DomainEvent):
    """A webhook endpoint was registered for the org's events.

    Its ``key_id`` is the endpoint's id (``webhook_id``). The signing secret is
    never in the event: it is kept sealed outside the log."""

    event_type: ClassVar[str] = "WebhookRegistered"

    webhook_id: str
    url: str
    # Empty: every event type keyledger delivers.
    event_types: tuple[str, ...] = ()


class WebhookRemoved(DomainEvent):
    """A webhook endpoint was removed: it is sent nothing more.

    Its ``key_id`` is the endpoint's id (``webhook_id``)."""

    event_type: ClassVar[str] = "WebhookRemoved"

    webhook_id: str


WebhookEvent = WebhookRegistered | WebhookRemoved


KeyChangeEvent = (
    KeyScopesChanged
    | KeyMetadataChanged
    | KeyRateLimitsChanged
    | KeyCreditsChanged
    | KeyOriginsChanged
    | KeyIpAllowlistChanged
    | KeyExpiryChanged
    | KeyIdentityChanged
)


class KeyExpiringSoon(DomainEvent):
    """A warning: the key expires within ``lead`` (written once per lead and ``expires_at``)."""

    event_type: ClassVar[str] = "KeyExpiringSoon"

    expires_at: datetime
    # The configured lead time that came due, as configured: "7d", "1d", "12h".
    lead: str


KeyEvent = (
    KeyGenerated
    | KeyRenamed
    | KeyDisabled
    | KeyEnabled
    | KeyRevoked
    | KeyRotated
    | KeyExpired
    | KeyChangeEvent
    | KeyCreditsRefilled
    | KeyExpiringSoon
)

# Every event the log holds: a key's, an identity's, or a webhook endpoint's.
LogEvent = KeyEvent | IdentityEvent | WebhookEvent

EVENT_TYPES: dict[str, type[LogEvent]] = {
    cls.event_type: cls
    for cls in (
        KeyGenerated,
        KeyRenamed,
        KeyDisabled,
        KeyEnabled,
        KeyRevoked,
        KeyRotated,
        KeyExpired,
        KeyScopesChanged,
        KeyMetadataChanged,
        KeyRateLimitsChanged,
        KeyCreditsChanged,
        KeyOriginsChanged,
        KeyIpAllowlistChanged,
        KeyExpiryChanged,
        KeyIdentityChanged,
        KeyCreditsRefilled,
        KeyExpiringSoon,
        IdentityConfigured,
        WebhookRegistered,
        WebhookRemoved,
    )
}

# The events about webhook endpoints themselves: in the log and the audit trail, on
# NATS and the event stream, but never delivered to a webhook endpoint.
WEBHOOK_EVENT_TYPES = frozenset({WebhookRegistered.event_type, WebhookRemoved.event_type})


class Envelope(_Frozen):
    """An event as recorded in the log and published to subscribers.

    Its fields, for subscribers: docs/events.md#the-envelope.
    """

    event_id: UUID
    event_type: str
    schema_version: int
    org_id: str
    key_id: str
    stream_version: int
    position: int
    occurred_at: datetime
    actor: Actor
    data: dict[str, Any]
    hash: str
