"""What the keyledger API answers, as typed objects with the JSON fields as attributes.

Unknown fields are ignored, so a newer server does not break an older client.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from keyledger_client.events.models import Actor, Credits, Envelope, NamedRateLimit, RateLimit
from keyledger_client.events.vocabulary import Algorithm, Environment, KeyType, Status


class _Answer(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class Key(_Answer):
    """A key as the API shows it (never its secret)."""

    id: str
    org_id: str
    name: str
    type: KeyType
    environment: Environment
    status: Status
    scopes: list[str] = []
    allowed_origins: list[str] | None = None
    resource: str | None = None
    algorithm: Algorithm | None = None
    public_key: str | None = None
    hint: str | None = None
    metadata: dict[str, Any] = {}
    rate_limit: RateLimit | None = None
    rate_limits: list[NamedRateLimit] = []
    credits: Credits | None = None
    allowed_cidrs: list[str] = []
    identity_id: str | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    disabled_at: datetime | None = None
    revoked_at: datetime | None = None
    previous_valid_until: datetime | None = None
    version: int


class CommandResult(_Answer):
    """A command's answer; ``secret`` / ``private_key`` are shown once (generate, rotate)."""

    key: Key
    position: int
    secret: str | None = None
    private_key: str | None = None
    replayed: bool | None = None


class BulkRevocation(_Answer):
    """What a bulk revocation did: the keys ``revoked`` now, those ``already_terminal`` and
    ``quarantined`` (nothing written for either), and the ``position`` to read after."""

    revoked: list[str]
    already_terminal: list[str] = []
    quarantined: list[str] = []
    position: int
    replayed: bool | None = None


class Identity(_Answer):
    """An identity: limits shared by every key whose ``identity_id`` it is."""

    id: str
    org_id: str
    rate_limits: list[NamedRateLimit] = []
    metadata: dict[str, Any] = {}
    created_at: datetime | None = None
    updated_at: datetime | None = None
    version: int


class IdentityResult(_Answer):
    """The answer of ``PUT …/identities/{id}``: the identity as it now is."""

    identity: Identity
    position: int
    replayed: bool | None = None


class Webhook(_Answer):
    """A webhook endpoint as the API shows it (never its signing secret)."""

    id: str
    org_id: str
    url: str
    event_types: list[str] = []
    created_at: datetime | None = None
    created_by: Actor | None = None
    removed_at: datetime | None = None
    removed_by: Actor | None = None


class WebhookResult(_Answer):
    """The answer of registering or removing an endpoint; ``secret`` is the signing secret,
    in a registration's first answer only (None in a replay of a retried one)."""

    webhook: Webhook
    # The log position of the event written (a ``min_position`` for reads); None from a
    # server older than this field.
    position: int | None = None
    secret: str | None = None
    replayed: bool | None = None


class Delivery(_Answer):
    """One attempt at delivering an event to a webhook endpoint (never the receiver's answer).

    ``outcome``: ``delivered`` (2xx), ``failed`` (to be retried) or ``dead_lettered``."""

    id: int
    event_id: str
    event_type: str
    key_id: str
    position: int
    attempt: int
    attempted_at: datetime
    outcome: Literal["delivered", "failed", "dead_lettered"]
    status_code: int | None = None
    error: str | None = None


class UnreadableEvent(_Answer):
    """A row of the log that could not be read, in its place (never its data)."""

    position: int
    stream_version: int | None = None
    event_type: str
    org_id: str
    key_id: str
    unreadable: Literal[True]
    detail: str = ""


LogEntry = Envelope | UnreadableEvent


class VerifiedKey(_Answer):
    """The key a verdict is about, as ``/v1/verify`` shows it."""

    id: str
    org_id: str
    name: str
    type: KeyType
    environment: Environment
    scopes: list[str] = []
    metadata: dict[str, Any] = {}
    expires_at: datetime | None = None
    # Keys of one identity share its limits (counted by keyledger, never cached locally).
    identity_id: str | None = None


class VerifyResult(_Answer):
    """A verdict: ``valid``, its ``code`` and ``http_status``, and the ``key`` when known.

    ``ratelimits`` and ``credits_remaining`` come with keys that have usage limits."""

    valid: bool
    code: str
    http_status: int
    key: VerifiedKey | None = None
    retry_after: int | None = None
    ratelimits: list[dict[str, Any]] | None = None
    credits_remaining: int | None = None


class AuthorizeResult(_Answer):
    """What ``/v1/authorize`` answered: the verdict, and its status as the proxy would."""

    status: int
    verdict: VerifyResult
    key_id: str | None = None
    org_id: str | None = None
    scopes: list[str] = []


class ChainReport(_Answer):
    """The hash chain walked end to end: ``ok``, how many ``events``, where it broke."""

    ok: bool
    events: int
    broken_at: int | None = None
    reason: str | None = None
    log_truncated: bool = False


# The bucket sizes of ``GET …/keys/{id}/usage``.
Granularity = Literal["minute", "hour", "day"]


class UsageBucket(_Answer):
    """A key's verifications in the bucket starting at ``t`` (UTC), per kind of verdict."""

    t: datetime
    valid: int
    rate_limited: int
    usage_exceeded: int
    denied: int


class KeyUsage(_Answer):
    """A key's verifications over time: every bucket of the range, zeros included."""

    granularity: Granularity
    series: list[UsageBucket]


class Me(_Answer):
    """The calling service key: its ``id``, ``scopes`` and ``orgs`` (None: every org)."""

    id: str
    scopes: list[str]
    orgs: list[str] | None = None


class UsageRecorded(_Answer):
    """How many reported uses were recorded, and how many named keys the caller cannot see."""

    recorded: int
    ignored: int
