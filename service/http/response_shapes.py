"""The JSON the API answers with, as pydantic models, for ``/openapi.json``.

Handlers build their answers with ``render_key``, ``Verdict.to_json``,
``envelope_json`` and ``error_response``; these models describe exactly
those shapes (the events themselves reuse ``events.models.Envelope``), and
the schemathesis contract test checks every answer against them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel

from events.models import Envelope
from events.vocabulary import Algorithm, Environment, KeyType, Status
from service.http.schemas import CreditsBody, NamedRateLimitBody, RateLimitBody
from service.verification.policy import VerifyCode


class _Shape(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Quarantine(_Shape):
    """Why one consumer of the log (``key_views``, ``outbox_relay:…``…) set a key aside."""

    position: int
    event_type: str
    reason: str
    quarantined_at: datetime | None


class Key(_Shape):
    """A key as callers see it: never a secret or a hash."""

    id: str = Field(pattern=r"^key_[0-9A-HJKMNP-TV-Z]{26}$")
    org_id: str
    name: str
    type: KeyType
    environment: Environment
    status: Status
    scopes: list[str]
    allowed_origins: list[str] | None
    resource: str | None
    algorithm: Algorithm | None
    public_key: str | None
    hint: str | None
    metadata: dict[str, Any]
    rate_limit: RateLimitBody | None
    rate_limits: list[NamedRateLimitBody]
    credits: CreditsBody | None
    allowed_cidrs: list[str]
    identity_id: str | None
    created_at: datetime | None
    updated_at: datetime | None
    last_used_at: datetime | None
    expires_at: datetime | None
    disabled_at: datetime | None
    revoked_at: datetime | None
    previous_valid_until: datetime | None
    version: int
    # Only on GET of a key some consumer of the log has set aside (docs/security.md §5).
    quarantined: dict[str, Quarantine] | None = None


class CommandResult(_Shape):
    """A command's answer; ``secret``/``private_key`` only once, from GenerateKey and RotateKey."""

    key: Key
    position: int = Field(ge=1)
    secret: str | None = None
    private_key: str | None = None
    replayed: bool | None = None


class RevocationResult(_Shape):
    """A bulk revocation's answer: key ids by what became of them, and the log position."""

    revoked: list[str] = Field(description="Keys that got a KeyRevoked now.")
    already_terminal: list[str] = Field(description="Named keys already revoked: nothing written.")
    quarantined: list[str] = Field(
        description="Keys whose events do not fold: not revoked (verification refuses them)."
    )
    position: int = Field(ge=0)
    replayed: bool | None = None


class Identity(_Shape):
    """An identity: the rate limits its keys share, and its metadata."""

    id: str
    org_id: str
    rate_limits: list[NamedRateLimitBody]
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    version: int = Field(ge=1)


class IdentityResult(_Shape):
    """The answer of ``PUT …/identities/{identity_id}``: the identity as it now is."""

    identity: Identity
    position: int = Field(ge=1)
    replayed: bool | None = None


class KeyPage(_Shape):
    data: list[Key]
    next_cursor: str | None


class UnreadableEvent(_Shape):
    """A row of the log that cannot be read, in its place: never its data.

    Its key is set aside (quarantined) by the consumers of the log, and
    commands on it answer 409 ``key_quarantined``.
    """

    position: int
    stream_version: int | None
    event_type: str
    org_id: str
    key_id: str
    unreadable: Literal[True]
    detail: str


class KeyEvents(_Shape):
    data: list[Envelope | UnreadableEvent]


class AuditPage(_Shape):
    data: list[Envelope | UnreadableEvent]
    next_cursor: int | None


class LogHead(_Shape):
    position: int = Field(ge=0)
    hash: str


class LogWitness(_Shape):
    """Where the log was seen to reach ``position``; ``held``: the log still has it."""

    source: str
    position: int = Field(ge=0)
    hash: str | None
    held: bool


class ChainReport(_Shape):
    ok: bool
    events: int = Field(ge=0)
    broken_at: int | None
    reason: str | None = None
    log_truncated: bool
    head: LogHead
    witnesses: list[LogWitness]
    unchecked: list[str]


class VerifiedKey(_Shape):
    id: str
    org_id: str
    name: str
    type: KeyType
    environment: Environment
    scopes: list[str]
    metadata: dict[str, Any]
    expires_at: datetime | None
    identity_id: str | None


class RateLimitStateShape(_Shape):
    """One named limit after the request: what is left and when its window ends."""

    name: str
    limit: int
    remaining: int
    reset_at: datetime


class VerifyResult(_Shape):
    """Always the body of ``POST /v1/verify`` (status 200) and of ``GET /v1/authorize``."""

    valid: bool
    code: VerifyCode
    http_status: Literal[200, 401, 403, 429]
    key: VerifiedKey | None
    retry_after: int | None = None
    # Only for a key with rate limits.
    ratelimits: list[RateLimitStateShape] | None = None
    # Only for a key with credits.
    credits_remaining: int | None = None


class UsageRecorded(_Shape):
    """The answer to ``POST /v1/usage``: uses recorded, and uses of keys unknown to the caller."""

    recorded: int
    ignored: int


class ErrorDetail(_Shape):
    code: str = Field(pattern=r"^[a-z][a-z0-9_]*$")
    message: str
    request_id: str
    details: Any = None


class ErrorBody(_Shape):
    """Every error: ``{"error": {code, message, request_id, details?}}``."""

    error: ErrorDetail


class Health(_Shape):
    status: Literal["ok"]


class QuarantinedKeyNote(_Shape):
    """A key set aside by a consumer of the log, as ``/readyz`` names it (no reason)."""

    consumer: str
    key_id: str
    position: int
    event_type: str


class Readiness(_Shape):
    """503 ``not_ready`` names ``problems`` (this replica); ``degraded`` is shared, with 200."""

    status: Literal["ready", "degraded", "not_ready"]
    problems: list[str] | None = None
    degraded: list[str] | None = None
    quarantined: list[QuarantinedKeyNote] | None = None


class ActorShape(_Shape):
    id: str
    on_behalf_of: str | None = None
    request_id: str | None = None


class Webhook(_Shape):
    """A webhook endpoint (never its secret)."""

    id: str
    org_id: str
    url: str
    event_types: list[str]
    created_at: datetime
    created_by: ActorShape
    removed_at: datetime | None
    removed_by: ActorShape | None


class WebhookCreated(_Shape):
    webhook: Webhook
    # The WebhookRegistered event's log position, a min_position for reads.
    position: int = Field(ge=0)
    # The signing secret, shown this once: null in a replay for a retried Idempotency-Key.
    secret: str | None
    replayed: bool | None = None


class WebhookOne(_Shape):
    webhook: Webhook
    replayed: bool | None = None


class WebhookRemoval(_Shape):
    """A removal's answer: the endpoint, and its WebhookRemoved event's log position."""

    webhook: Webhook
    position: int = Field(ge=0)
    replayed: bool | None = None


class WebhookList(_Shape):
    data: list[Webhook]


class DeliveryAttempt(_Shape):
    id: int
    event_id: str
    event_type: str
    key_id: str
    position: int
    attempt: int
    attempted_at: datetime
    outcome: Literal["delivered", "failed", "dead_lettered"]
    status_code: int | None
    error: str | None


class DeliveryPage(_Shape):
    data: list[DeliveryAttempt]
    next_before: int | None


class UsagePoint(_Shape):
    t: datetime
    valid: int
    rate_limited: int
    usage_exceeded: int
    denied: int


class KeyUsage(_Shape):
    granularity: Literal["minute", "hour", "day"]
    series: list[UsagePoint]


class LeakLabel(_Shape):
    token_hash: str
    token_type: str
    label: Literal["true_positive", "false_positive"]


class LeakLabels(RootModel[list[LeakLabel]]):
    """GitHub's answer to a leak report: one label per token, in order."""


class Caller(_Shape):
    """The calling service key: what the console needs to know which orgs to offer."""

    id: str
    scopes: list[str]
    # null: every org (and `_system` with `admin`).
    orgs: list[str] | None


RESPONSE_MODELS: tuple[type[BaseModel], ...] = (
    Caller,
    Key,
    CommandResult,
    RevocationResult,
    Identity,
    IdentityResult,
    KeyPage,
    KeyEvents,
    AuditPage,
    ChainReport,
    VerifiedKey,
    VerifyResult,
    UsageRecorded,
    ErrorBody,
    Health,
    Readiness,
    WebhookCreated,
    WebhookOne,
    WebhookRemoval,
    WebhookList,
    DeliveryPage,
    LeakLabels,
    KeyUsage,
)
