"""Every endpoint of the keyledger API as a ``Call``: what to send and how to read the answer.

The async and the sync client send the same ``Call`` objects, so an endpoint is
described once here and is one short method on each client. Nothing here does I/O.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from keyledger_client.errors import KeyledgerAPIError
from keyledger_client.events.models import Envelope
from keyledger_client.models import (
    AuthorizeResult,
    BulkRevocation,
    ChainReport,
    CommandResult,
    Delivery,
    Granularity,
    Identity,
    IdentityResult,
    Key,
    KeyUsage,
    LogEntry,
    Me,
    UnreadableEvent,
    UsageRecorded,
    VerifyResult,
    Webhook,
    WebhookResult,
)
from keyledger_client.retries import retry_after_of

T = TypeVar("T")
Cursor = str | int | None


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer as the parsers need it."""

    status: int
    headers: Mapping[str, str]
    body: Any  # parsed JSON, or None when the body is not JSON


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request, and how its answer becomes a result."""

    method: str
    path: str
    parse: Callable[[Reply], T]
    params: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # Statuses that are answers rather than errors (``/v1/authorize`` answers 401 verdicts).
    answers: frozenset[int] = frozenset({200, 201})


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a list and the cursor of the next one (None: the last page)."""

    items: list[T]
    next_cursor: Cursor


def api_error(reply: Reply) -> KeyledgerAPIError:
    """The error a refusal stands for, from keyledger's error body when there is one."""
    error = reply.body.get("error") if isinstance(reply.body, dict) else None
    if isinstance(error, dict) and isinstance(error.get("code"), str):
        return KeyledgerAPIError(
            reply.status,
            error["code"],
            str(error.get("message", "")),
            error.get("request_id") or reply.headers.get("x-request-id"),
            error.get("details"),
            retry_after_of(reply.headers),
        )
    return KeyledgerAPIError(
        reply.status,
        f"http_{reply.status}",
        "the answer was not a keyledger error body",
        reply.headers.get("x-request-id"),
        retry_after=retry_after_of(reply.headers),
    )


def _model(cls: Any) -> Callable[[Reply], Any]:
    return lambda reply: cls.model_validate(reply.body)


def _entry(raw: dict[str, Any]) -> LogEntry:
    if raw.get("unreadable") is True:
        return UnreadableEvent.model_validate(raw)
    return Envelope.model_validate(raw)


# -- commands -----------------------------------------------------------------------


def command_headers(
    idempotency_key: str | None = None,
    if_match: int | None = None,
    on_behalf_of: str | None = None,
) -> dict[str, str]:
    """A command's headers: always an ``Idempotency-Key`` (new unless given), so a retry is
    safe; ``If-Match`` and ``X-On-Behalf-Of`` when given."""
    if idempotency_key is not None:
        header_text("idempotency_key", idempotency_key)
    headers = {"Idempotency-Key": idempotency_key or f"klc-{uuid.uuid4()}"}
    if if_match is not None:
        headers["If-Match"] = f'"{if_match}"'
    if on_behalf_of is not None:
        headers["X-On-Behalf-Of"] = header_text("on_behalf_of", on_behalf_of)
    return headers


# A header value keyledger accepts from a caller (``Idempotency-Key``, ``X-On-Behalf-Of``):
# 1-255 printable ASCII characters, the first not a space.
_HEADER_TEXT = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,254}")


def header_text(name: str, value: str) -> str:
    """``value`` if keyledger takes it as the header ``name`` stands for; ValueError (not
    quoting it: it may be anything) before anything is sent if not."""
    if not _HEADER_TEXT.fullmatch(value):
        raise ValueError(f"{name} must be 1-255 printable ASCII characters, the first not a space")
    return value


def command(
    path: str, body: dict[str, Any] | None, *, method: str = "POST", **options: Any
) -> Call[CommandResult]:
    """A command on one key (``options``: ``idempotency_key``, ``if_match``, ``on_behalf_of``)."""
    headers = command_headers(**options)
    return Call(method, path, _model(CommandResult), json=body, headers=headers)


def update_key(
    org_id: str, key_id: str, changes: Mapping[str, Any], **options: Any
) -> Call[CommandResult]:
    """``PATCH /v1/orgs/{org}/keys/{id}``: each aspect named in ``changes`` (None clears
    ``credits``, ``expires_at`` or ``identity_id``), nothing else."""
    return command(keys_path(org_id, key_id), dict(changes), method="PATCH", **options)


def revoke_keys(
    org_id: str, reason: str, selection: Mapping[str, Any], **options: Any
) -> Call[BulkRevocation]:
    """``POST /v1/orgs/{org}/revocations``: ``selection`` is ``key_ids``, ``created_by``
    or ``all`` (and optionally ``environment``)."""
    body = {"reason": reason, **without_none(selection)}
    headers = command_headers(**options)
    return Call(
        "POST", f"/v1/orgs/{org_id}/revocations", _model(BulkRevocation), json=body, headers=headers
    )


def identity_path(org_id: str, identity_id: str) -> str:
    """``/v1/orgs/{org}/identities/{id}`` (the id percent-encoded: it is the customer's own)."""
    return f"/v1/orgs/{org_id}/identities/{quote(identity_id, safe='')}"


def configure_identity(
    org_id: str,
    identity_id: str,
    rate_limits: Sequence[Mapping[str, Any]],
    metadata: Mapping[str, Any] | None,
    **options: Any,
) -> Call[IdentityResult]:
    """``PUT /v1/orgs/{org}/identities/{id}``: the identity's shared limits and metadata."""
    limits = [dict(limit) for limit in rate_limits]
    body = without_none({"rate_limits": limits, "metadata": metadata})
    headers = command_headers(**options)
    path = identity_path(org_id, identity_id)
    return Call("PUT", path, _model(IdentityResult), json=body, headers=headers)


def register_webhook(
    org_id: str, url: str, event_types: Sequence[str] | None, **options: Any
) -> Call[WebhookResult]:
    """``POST /v1/orgs/{org}/webhooks``: a new endpoint and its signing secret, once."""
    types = list(event_types) if event_types is not None else None
    body = without_none({"url": url, "event_types": types})
    headers = command_headers(**options)
    return Call("POST", webhook_path(org_id), _model(WebhookResult), json=body, headers=headers)


def remove_webhook(org_id: str, webhook_id: str, **options: Any) -> Call[WebhookResult]:
    """``DELETE /v1/orgs/{org}/webhooks/{id}``: no event is sent to the endpoint any more."""
    path = webhook_path(org_id, webhook_id)
    return Call("DELETE", path, _model(WebhookResult), headers=command_headers(**options))


def webhook_path(org_id: str, webhook_id: str | None = None) -> str:
    """``/v1/orgs/{org}/webhooks[/{id}]`` (the id percent-encoded: it comes from a caller)."""
    path = f"/v1/orgs/{org_id}/webhooks"
    return path if webhook_id is None else f"{path}/{quote(webhook_id, safe='')}"


def keys_path(org_id: str, key_id: str | None = None, action: str | None = None) -> str:
    """``/v1/orgs/{org}/keys[/{id}[/{action}]]``."""
    path = f"/v1/orgs/{org_id}/keys"
    if key_id is not None:
        path += f"/{key_id}"
    if action is not None:
        path += f"/{action}"
    return path


def without_none(fields: Mapping[str, Any]) -> dict[str, Any]:
    """The fields that were given: an omitted optional field is not sent as null."""
    return {name: value for name, value in fields.items() if value is not None}


# -- reads --------------------------------------------------------------------------


def get_key(org_id: str, key_id: str, min_position: int | None = None) -> Call[Key]:
    """``GET /v1/orgs/{org}/keys/{id}``."""
    params = without_none({"min_position": min_position})
    return Call("GET", keys_path(org_id, key_id), _model(Key), params=_text(params))


def key_page(org_id: str, filters: Mapping[str, Any], cursor: Cursor) -> Call[Page[Key]]:
    """One page of ``GET /v1/orgs/{org}/keys`` (the first one at ``filters``' own ``cursor``,
    when given: a cursor keyledger refuses is its 422 ``invalid_cursor``, never page one)."""
    params = _text(without_none({**filters, **without_none({"cursor": cursor})}))

    def parse(reply: Reply) -> Page[Key]:
        items = [Key.model_validate(raw) for raw in reply.body["data"]]
        return Page(items, reply.body.get("next_cursor"))

    return Call("GET", keys_path(org_id), parse, params=params)


def key_events(org_id: str, key_id: str, min_position: int | None = None) -> Call[list[LogEntry]]:
    """``GET /v1/orgs/{org}/keys/{id}/events``: the key's events in stream order."""
    params = _text(without_none({"min_position": min_position}))
    return Call(
        "GET",
        keys_path(org_id, key_id, "events"),
        lambda reply: [_entry(raw) for raw in reply.body["data"]],
        params=params,
    )


def audit_page(filters: Mapping[str, Any], cursor: Cursor) -> Call[Page[LogEntry]]:
    """One page of ``GET /v1/audit`` (the first one after ``filters``' own ``after``, if given)."""
    params = _text(without_none({**filters, **without_none({"after": cursor})}))

    def parse(reply: Reply) -> Page[LogEntry]:
        return Page([_entry(raw) for raw in reply.body["data"]], reply.body.get("next_cursor"))

    return Call("GET", "/v1/audit", parse, params=params)


def audit_verify() -> Call[ChainReport]:
    """``GET /v1/audit/verify``."""
    return Call("GET", "/v1/audit/verify", _model(ChainReport))


def get_identity(org_id: str, identity_id: str) -> Call[Identity]:
    """``GET /v1/orgs/{org}/identities/{id}`` (read from the log: always current)."""
    return Call("GET", identity_path(org_id, identity_id), _model(Identity))


def list_webhooks(org_id: str) -> Call[list[Webhook]]:
    """``GET /v1/orgs/{org}/webhooks``: the endpoints not removed, newest first (one answer:
    an org has few endpoints, so the API does not page them)."""
    return Call(
        "GET",
        webhook_path(org_id),
        lambda reply: [Webhook.model_validate(raw) for raw in reply.body["data"]],
    )


def get_webhook(org_id: str, webhook_id: str) -> Call[Webhook]:
    """``GET /v1/orgs/{org}/webhooks/{id}`` (a removed endpoint too)."""
    return Call(
        "GET",
        webhook_path(org_id, webhook_id),
        lambda reply: Webhook.model_validate(reply.body["webhook"]),
    )


def delivery_page(
    org_id: str, webhook_id: str, limit: int | None, cursor: Cursor
) -> Call[Page[Delivery]]:
    """One page of ``GET …/webhooks/{id}/deliveries``, newest first: the attempts before the
    attempt id ``cursor`` (the previous page's ``next_before``; None: the newest)."""
    params = _text(without_none({"limit": limit, "before": cursor}))

    def parse(reply: Reply) -> Page[Delivery]:
        items = [Delivery.model_validate(raw) for raw in reply.body["data"]]
        return Page(items, reply.body.get("next_before"))

    path = webhook_path(org_id, webhook_id) + "/deliveries"
    return Call("GET", path, parse, params=params)


def key_usage(
    org_id: str,
    key_id: str,
    since: datetime | None,
    until: datetime | None,
    granularity: Granularity | None,
) -> Call[KeyUsage]:
    """``GET /v1/orgs/{org}/keys/{id}/usage``: verifications per bucket (``since`` and
    ``until`` need a timezone; the server's defaults for any not given)."""
    fields = {"since": since, "until": until, "granularity": granularity}
    params = _text(without_none(fields))
    return Call("GET", keys_path(org_id, key_id, "usage"), _model(KeyUsage), params=params)


def me() -> Call[Me]:
    """``GET /v1/me``: the calling service key's id, scopes and orgs."""
    return Call("GET", "/v1/me", _model(Me))


def _text(params: Mapping[str, Any]) -> dict[str, str]:
    def one(value: Any) -> str:
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return {name: one(value) for name, value in params.items()}


# -- verification -------------------------------------------------------------------


def verify(fields: Mapping[str, Any]) -> Call[VerifyResult]:
    """``POST /v1/verify`` with a bearer ``key`` or a signed request's fields."""
    return Call("POST", "/v1/verify", _model(VerifyResult), json=without_none(fields))


def authorize(
    credential_headers: Mapping[str, str],
    service_key: str,
    requirements: Mapping[str, Any],
) -> Call[AuthorizeResult]:
    """``GET /v1/authorize`` as a reverse proxy calls it, with the customer's headers."""
    params = without_none(dict(requirements))
    if isinstance(params.get("scopes"), list | tuple):
        params["scopes"] = ",".join(params["scopes"])

    def parse(reply: Reply) -> AuthorizeResult:
        if isinstance(reply.body, dict) and "error" in reply.body:
            raise api_error(reply)  # the proxy's own service key was refused
        scopes = reply.headers.get("x-keyledger-scopes")
        return AuthorizeResult(
            status=reply.status,
            verdict=VerifyResult.model_validate(reply.body),
            key_id=reply.headers.get("x-keyledger-key-id"),
            org_id=reply.headers.get("x-keyledger-org-id"),
            scopes=scopes.split(",") if scopes else [],
        )

    headers = {**credential_headers, "X-Keyledger-Service-Key": service_key}
    return Call(
        "GET",
        "/v1/authorize",
        parse,
        params=_text(params),
        headers=headers,
        answers=frozenset({200, 401, 403, 429}),
    )


# The most uses one ``POST /v1/usage`` takes.
MAX_USES_PER_REPORT = 500


def report_usage(uses: Mapping[str, datetime]) -> Call[UsageRecorded]:
    """``POST /v1/usage``: the latest use of each key, seen outside keyledger
    (at most ``MAX_USES_PER_REPORT``)."""
    body = {"uses": [{"key_id": k, "at": at.isoformat()} for k, at in uses.items()]}
    return Call("POST", "/v1/usage", _model(UsageRecorded), json=body)
