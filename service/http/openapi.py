"""``GET /openapi.json``: the API description, built from the models the handlers use.

Request bodies are the pydantic models the handlers validate with
(``service.http.schemas``, ``VerifyBody``); answers are the models of
``service.http.response_shapes``; query parameters are built from the same
constants ``service.http.query_params`` checks against. ``OPERATIONS`` below
is the one table of route → description; a test checks it names every route
the app serves, and a schemathesis run checks the server against it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from events.models import EVENT_TYPES
from events.vocabulary import ENVIRONMENTS, KEY_TYPES, STATUSES
from service.domain.orgs import SYSTEM_ORG
from service.domain.vocabulary import ACTOR_ID, HEADER_TEXT, KEY_ID, ORG_ID
from service.http import response_shapes as shapes
from service.http.schemas import (
    ConfigureIdentityBody,
    DisableKeyBody,
    EnableKeyBody,
    GenerateKeyBody,
    RegisterWebhookBody,
    RenameKeyBody,
    RevokeKeyBody,
    RevokeKeysBody,
    RotateKeyBody,
    UpdateKeyBody,
)
from service.http.usage_routes import UsageReport
from service.http.verify_routes import VerifyBody
from service.leaks import LeakReport

routes = web.RouteTableDef()
_REF = "#/components/schemas/{model}"
_ORG = {"type": "string", "pattern": f"^(?:{SYSTEM_ORG}|{ORG_ID.body})$"}
_KEY_ID = {"type": "string", "pattern": KEY_ID.json_pattern}
_HEADER_TEXT = {"type": "string", "pattern": HEADER_TEXT.json_pattern}
_ACTOR = {"type": "string", "pattern": ACTOR_ID.json_pattern}
_POSITION = {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}


def _param(
    where: str, name: str, schema: dict[str, Any], doc: str, required: bool = False
) -> dict[str, Any]:
    return {"in": where, "name": name, "required": required, "schema": schema, "description": doc}


_MIN_POSITION = _param(
    "query", "min_position", _POSITION, "Answer only from state at or past this log position."
)
_ORG_PATH = _param("path", "org_id", _ORG, "The tenant (or `_system` for service keys).", True)
_KEY_PATH = _param("path", "key_id", _KEY_ID, "`key_` + a 26-character ULID.", True)
_IDENTITY_PATH = _param(
    "path",
    "identity_id",
    {"type": "string", "minLength": 1, "maxLength": 128},
    "The identity's id in your own system (no control characters).",
    True,
)
_COMMAND_HEADERS = [
    _param(
        "header",
        "Idempotency-Key",
        _HEADER_TEXT,
        "Printable ASCII, at most 255 characters. A retry with the same key and body"
        " within 24 h returns the first result.",
    ),
    _param("header", "If-Match", {"type": "string"}, 'Conditional command: `"<version>"`.'),
    _param(
        "header",
        "X-On-Behalf-Of",
        _HEADER_TEXT,
        "Printable ASCII, at most 255 characters; recorded in the event's actor (e.g. `user:42`).",
    ),
]


@dataclass(frozen=True)
class Operation:
    """One route as ``/openapi.json`` describes it."""

    method: str
    path: str
    summary: str
    tag: str
    security: str | None = "ServiceKey"
    body: type[BaseModel] | None = None
    parameters: list[dict[str, Any]] = field(default_factory=list)
    # status → response model (None: no body); error statuses use the error shape.
    answers: dict[str, type[BaseModel] | None] = field(default_factory=dict)
    errors: tuple[str, ...] = ()
    # The operationId: what the operation does (``generateKey``), so generated clients read
    # well; without one it is derived from the method and path.
    name: str | None = None
    # A 200 that is not JSON: its media type and description.
    media: tuple[str, str] | None = None


_AUTHENTICATED = ("400", "401", "403", "422", "429")
_WITH_BODY = ("400", "413", "415", "422")
_COMMAND = (*_AUTHENTICATED, *_WITH_BODY, "404", "409", "412", "503")
_READ = (*_AUTHENTICATED, "404", "503")


def _command(
    path: str, summary: str, body: type[BaseModel], status: str = "200", method: str = "post"
) -> Operation:
    """A command; its operationId is its name (``GenerateKey: …`` → ``generateKey``)."""
    command = summary.split(":", 1)[0]
    name = command[0].lower() + command[1:]
    params = [_ORG_PATH] + ([_KEY_PATH] if "{key_id}" in path else []) + _COMMAND_HEADERS
    if "{key_id}" in path:
        # Nothing is decided on a state that cannot be read (docs/security.md §5).
        summary += " (409 `key_quarantined`, nothing written, when the key's events do not fold)"
    return Operation(
        method,
        path,
        summary,
        "commands",
        body=body,
        parameters=params,
        answers={status: shapes.CommandResult},
        errors=_COMMAND,
        name=name,
    )


_KEY = "/v1/orgs/{org_id}/keys/{key_id}"
_HOOKS = "/v1/orgs/{org_id}/webhooks"
_HOOK_PATH = _param("path", "webhook_id", {"type": "string"}, "`wh_` + a 26-character ULID.", True)
_HOOK_READ = (*_READ,)
_IDENTITY = "/v1/orgs/{org_id}/identities/{identity_id}"
OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "get",
        "/healthz",
        "The process is up",
        "operations",
        None,
        answers={"200": shapes.Health},
        name="health",
    ),
    Operation(
        "get",
        "/readyz",
        "200 ready or degraded (shared problems: NATS, relay, projections, quarantines);"
        " 503 only when this replica would answer wrongly",
        "operations",
        None,
        answers={"200": shapes.Readiness, "503": shapes.Readiness},
        name="readiness",
    ),
    Operation("get", "/metrics", "Prometheus metrics (text)", "operations", None, name="metrics"),
    Operation("get", "/openapi.json", "This document", "operations", None, name="openapi"),
    _command("/v1/orgs/{org_id}/keys", "GenerateKey", GenerateKeyBody, "201"),
    _command(
        _KEY,
        "UpdateKey: change aspects of a key, one event per aspect changed",
        UpdateKeyBody,
        method="patch",
    ),
    _command(f"{_KEY}/rename", "RenameKey", RenameKeyBody),
    _command(f"{_KEY}/disable", "DisableKey", DisableKeyBody),
    _command(f"{_KEY}/enable", "EnableKey", EnableKeyBody),
    _command(f"{_KEY}/revoke", "RevokeKey", RevokeKeyBody),
    _command(f"{_KEY}/rotate", "RotateKey", RotateKeyBody),
    Operation(
        "post",
        "/v1/orgs/{org_id}/revocations",
        "Bulk revocation (scope keys:write): `reason` and exactly one of `key_ids` (1-1000),"
        " `created_by` (an actor id) or `all: true`, optionally within one `environment`; one"
        " transaction, one KeyRevoked per key still revocable. 404 `key_not_found` (nothing"
        " written) when a named id is not a key of the org; 409 `too_many_keys` past 10,000.",
        "commands",
        body=RevokeKeysBody,
        parameters=[_ORG_PATH, _COMMAND_HEADERS[0], _COMMAND_HEADERS[2]],
        answers={"200": shapes.RevocationResult},
        errors=_COMMAND,
        name="revokeKeys",
    ),
    Operation(
        "put",
        _IDENTITY,
        "ConfigureIdentity: create or replace an identity's shared rate limits and metadata"
        " (scope keys:write); one IdentityConfigured when something changes. 201 when new.",
        "commands",
        body=ConfigureIdentityBody,
        parameters=[_ORG_PATH, _IDENTITY_PATH, *_COMMAND_HEADERS],
        answers={"200": shapes.IdentityResult, "201": shapes.IdentityResult},
        errors=_COMMAND,
        name="configureIdentity",
    ),
    Operation(
        "get",
        _IDENTITY,
        "One identity (with ETag; 404 `identity_not_found` when never configured)",
        "queries",
        parameters=[_ORG_PATH, _IDENTITY_PATH],
        answers={"200": shapes.Identity},
        errors=(*_READ, "409"),
        name="getIdentity",
    ),
    Operation(
        "get",
        "/v1/orgs/{org_id}/keys",
        "List keys, newest first",
        "queries",
        parameters=[
            _ORG_PATH,
            _param("query", "status", {"type": "string", "enum": list(STATUSES)}, "Filter."),
            _param("query", "type", {"type": "string", "enum": list(KEY_TYPES)}, "Filter."),
            _param(
                "query", "environment", {"type": "string", "enum": list(ENVIRONMENTS)}, "Filter."
            ),
            _param(
                "query",
                "identity",
                {"type": "string", "minLength": 1, "maxLength": 128},
                "One identity's keys (also accepted as `identity_id`).",
            ),
            _param("query", "limit", {"type": "integer", "minimum": 1, "maximum": 100}, "1-100."),
            _param("query", "cursor", {"type": "string"}, "A `next_cursor` of this list."),
            _MIN_POSITION,
        ],
        answers={"200": shapes.KeyPage},
        errors=_READ,
        name="listKeys",
    ),
    Operation(
        "get",
        _KEY,
        "One key (with ETag)",
        "queries",
        parameters=[
            _ORG_PATH,
            _KEY_PATH,
            _MIN_POSITION,
            _param("header", "If-None-Match", {"type": "string"}, "304 when it matches."),
        ],
        answers={"200": shapes.Key, "304": None},
        errors=(*_READ, "409"),  # 409 key_quarantined: not even the log folds (docs/security.md §5)
        name="getKey",
    ),
    Operation(
        "get",
        f"{_KEY}/events",
        "A key's events in stream order (a row that cannot be read: a placeholder with"
        " `unreadable: true`, never its data)",
        "queries",
        parameters=[_ORG_PATH, _KEY_PATH, _MIN_POSITION],
        answers={"200": shapes.KeyEvents},
        errors=_READ,
        name="keyEvents",
    ),
    Operation(
        "get",
        "/v1/me",
        "The calling service key: its id, scopes and orgs (null: every org)",
        "queries",
        answers={"200": shapes.Caller},
        errors=_AUTHENTICATED,
        name="me",
    ),
    Operation(
        "get",
        "/v1/orgs/{org_id}/events/stream",
        "An org's events, live, as server-sent events (`id:` the position, `event:` the type,"
        " `data:` the envelope without `data.secret_hash`); `Last-Event-ID` resumes after a"
        " position; `: heartbeat` comments; `event: close` names why a stream ended",
        "queries",
        parameters=[
            _ORG_PATH,
            _param(
                "header",
                "Last-Event-ID",
                {"type": "string", "pattern": "^[0-9]{1,18}$"},
                "Resume after this log position (the id of the last event received).",
            ),
        ],
        errors=_READ,
        media=("text/event-stream", "The stream (never ends by itself)"),
        name="streamEvents",
    ),
    *(
        Operation(
            "get",
            path,
            summary,
            "console",
            security=None,
            parameters=params,
            errors=("404",),
            media=(media, "The console's page or asset"),
            name=name,
        )
        for path, summary, params, media, name in (
            ("/console", "The web console (sign in)", [], "text/html", "consoleSignIn"),
            (
                "/console/orgs/{org_id}",
                "The console: an org's keys",
                [_ORG_PATH],
                "text/html",
                "consoleKeys",
            ),
            (
                "/console/orgs/{org_id}/keys/{key_id}",
                "The console: one key and its timeline",
                [_ORG_PATH, _KEY_PATH],
                "text/html",
                "consoleKey",
            ),
            (
                "/console/assets/{name}",
                "The console's script, style sheet and icon",
                [_param("path", "name", {"type": "string"}, "An asset's file name.", True)],
                "*/*",
                "consoleAsset",
            ),
        )
    ),
    Operation(
        "get",
        "/v1/audit",
        "Events in position order (scope audit:read; a row that cannot be read: a placeholder"
        " with `unreadable: true`, never its data)",
        "audit",
        parameters=[
            _param("query", "org_id", _ORG, "Filter."),
            _param("query", "key_id", _KEY_ID, "Filter."),
            _param("query", "event_type", {"type": "string", "enum": list(EVENT_TYPES)}, "Filter."),
            _param("query", "actor", _ACTOR, "Filter."),
            _param("query", "since", {"type": "string", "format": "date-time"}, "From (incl.)."),
            _param("query", "until", {"type": "string", "format": "date-time"}, "Until (incl.)."),
            _param("query", "after", _POSITION, "A `next_cursor`."),
            _param("query", "limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "1-1000."),
            _MIN_POSITION,
        ],
        answers={"200": shapes.AuditPage},
        errors=_READ,
        name="searchAudit",
    ),
    Operation(
        "get",
        "/v1/audit/verify",
        "Walk the hash chain",
        "audit",
        parameters=[_MIN_POSITION],
        answers={"200": shapes.ChainReport},
        errors=_READ,
        name="verifyAuditChain",
    ),
    Operation(
        "post",
        "/v1/verify",
        "Verify a bearer key or a signed request (200 with the verdict in the body; 503"
        " `log_truncated` while the log is missing events)",
        "verification",
        body=VerifyBody,
        answers={"200": shapes.VerifyResult},
        errors=(*_AUTHENTICATED, *_WITH_BODY, "503"),
        name="verifyKey",
    ),
    Operation(
        "get",
        "/v1/authorize",
        "Forward auth for reverse proxies: answers the verdict's status. The customer's "
        "credential is read from `Authorization: Bearer …` or `X-API-Key` + `X-API-Signature` "
        "[+ `X-API-Timestamp`], with `Origin`, `X-Forwarded-Method`, `X-Forwarded-Uri`. A key"
        " with rate limits adds `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset`.",
        "verification",
        security="ProxyServiceKey",
        parameters=[
            _param("query", "resource", {"type": "string"}, "The protected resource."),
            _param("query", "scopes", {"type": "string"}, "Required scopes, comma-separated."),
            _param("query", "environment", {"type": "string", "enum": list(ENVIRONMENTS)}, "Env."),
            _param(
                "query",
                "cost",
                {"type": "integer", "minimum": 0, "maximum": 1000},
                "What the request counts for against rate limits and credits (default 1).",
            ),
            _MIN_POSITION,
            _param(
                "header",
                "X-Forwarded-For",
                {"type": "string"},
                "The client's address, believed from KEYLEDGER_TRUSTED_PROXIES only.",
            ),
            _param("header", "X-Real-IP", {"type": "string"}, "As X-Forwarded-For, without it."),
            _param("header", "X-API-Key", {"type": "string"}, "Signed request: the key id."),
            _param("header", "X-API-Signature", {"type": "string"}, "Signed request."),
            _param("header", "X-API-Timestamp", {"type": "string"}, "Unix seconds (replay)."),
            _param("header", "X-Forwarded-Method", {"type": "string"}, "The proxied method."),
            _param("header", "X-Forwarded-Uri", {"type": "string"}, "The proxied path+query."),
        ],
        answers={"200": shapes.VerifyResult},
        errors=("400", "422", "503"),
        name="authorize",
    ),
    Operation(
        "post",
        "/v1/usage",
        "Report uses of keys verified outside keyledger (a client's in-process cache), so"
        " `last_used_at` stays true (scope keys:verify; keys the caller cannot see are ignored)",
        "verification",
        body=UsageReport,
        answers={"200": shapes.UsageRecorded},
        errors=(*_AUTHENTICATED, *_WITH_BODY),
        name="reportUsage",
    ),
)
OPERATIONS += (
    Operation(
        "post",
        _HOOKS,
        "Register a webhook endpoint (scope admin); the signing secret is answered once",
        "webhooks",
        body=RegisterWebhookBody,
        parameters=[_ORG_PATH, *_COMMAND_HEADERS[2:]],
        answers={"201": shapes.WebhookCreated},
        errors=(*_AUTHENTICATED, *_WITH_BODY, "404"),
        name="registerWebhook",
    ),
    Operation(
        "get", _HOOKS, "The org's webhook endpoints (scope audit:read)", "webhooks",
        parameters=[_ORG_PATH], answers={"200": shapes.WebhookList}, errors=_HOOK_READ,
        name="listWebhooks",
    ),
    Operation(
        "get", f"{_HOOKS}/{{webhook_id}}", "One webhook endpoint", "webhooks",
        parameters=[_ORG_PATH, _HOOK_PATH], answers={"200": shapes.WebhookOne}, errors=_HOOK_READ,
        name="getWebhook",
    ),
    Operation(
        "delete", f"{_HOOKS}/{{webhook_id}}", "Remove a webhook endpoint (scope admin)",
        "webhooks", parameters=[_ORG_PATH, _HOOK_PATH, *_COMMAND_HEADERS[2:]],
        answers={"200": shapes.WebhookOne}, errors=_HOOK_READ, name="removeWebhook",
    ),
    Operation(
        "get", f"{_HOOKS}/{{webhook_id}}/deliveries", "Delivery attempts, newest first",
        "webhooks",
        parameters=[
            _ORG_PATH,
            _HOOK_PATH,
            _param("query", "limit", {"type": "integer", "minimum": 1, "maximum": 500}, "1-500."),
            _param("query", "before", _POSITION, "A `next_before`."),
        ],
        answers={"200": shapes.DeliveryPage},
        errors=_HOOK_READ,
        name="listWebhookDeliveries",
    ),
)  # fmt: skip
_GRANULARITY = {"type": "string", "enum": ["minute", "hour", "day"]}
_INSTANT = {"type": "string", "format": "date-time"}
_GITHUB = "GitHub-Public-Key-"
OPERATIONS += (
    Operation(
        "get", f"{_KEY}/usage", "A key's verifications per minute, hour or day (zeros included)",
        "queries", answers={"200": shapes.KeyUsage}, errors=_READ,
        parameters=[
            _ORG_PATH, _KEY_PATH, _param("query", "granularity", _GRANULARITY, "Default hour."),
            _param("query", "since", _INSTANT, "From."), _param("query", "until", _INSTANT, "To."),
        ],
        name="getKeyUsage",
    ),
    Operation(
        "post", "/v1/leaks", "A secret scanner's leak report (GitHub's partner format; signed)",
        "integrations", security=None, body=LeakReport, answers={"200": shapes.LeakLabels},
        errors=("400", "401", "404", "413", "415", "422", "503"),
        parameters=[
            _param("header", f"{_GITHUB}Identifier", {"type": "string"}, "Signing key."),
            _param("header", f"{_GITHUB}Signature", {"type": "string"}, "base64 DER ECDSA."),
        ],
        name="reportLeaks",
    ),
)  # fmt: skip
# authorize answers 401/403/429 with the verdict, or with an error about the proxy's own key.
_VERDICT_OR_ERROR = ("401", "403", "429")


def _schema_ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _responses(op: Operation) -> dict[str, Any]:
    error = _schema_ref(shapes.ErrorBody)
    out: dict[str, Any] = {}
    for status, model in op.answers.items():
        out[status] = _json(_schema_ref(model), "OK") if model else {"description": "Not modified"}
    if op.path == "/metrics":
        out["200"] = {
            "description": "Prometheus text exposition",
            "content": {"text/plain": {"schema": {"type": "string"}}},
        }
    elif op.media is not None:
        media, description = op.media
        out["200"] = {
            "description": description,
            "content": {media: {"schema": {"type": "string"}}},
        }
    elif op.path == "/openapi.json":
        out["200"] = _json({"type": "object"}, "This OpenAPI document")
    for status in op.errors:
        out[status] = _json(error, "Error")
    if op.path == "/v1/authorize":
        for status in _VERDICT_OR_ERROR:
            out[status] = _json(
                {"anyOf": [_schema_ref(shapes.VerifyResult), error]},
                "The verdict (customer key refused) or an error (proxy's service key refused)",
            )
    out["default"] = _json(error, "Any other error (same shape)")
    return out


def _operation(op: Operation) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "summary": op.summary,
        "operationId": op.name
        or f"{op.method}_{op.path.strip('/').replace('/', '_').replace('.', '_')}",
        "tags": [op.tag],
        "parameters": list(op.parameters),
        "responses": _responses(op),
        "security": [{op.security: []}] if op.security else [],
    }
    if op.body is not None:
        spec["requestBody"] = {
            "required": op.body is not EnableKeyBody,
            "content": {"application/json": {"schema": _schema_ref(op.body)}},
        }
    return spec


@functools.cache
def build_openapi() -> dict[str, Any]:
    """The OpenAPI 3.1 document of this version of keyledger."""
    models = {op.body for op in OPERATIONS if op.body} | set(shapes.RESPONSE_MODELS)
    _, components = models_json_schema(
        [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)], ref_template=_REF
    )
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "keyledger",
            "version": "0.1.0",
            "description": "Event-sourced API key lifecycle service.",
        },
        "paths": paths,
        "components": {
            "schemas": components.get("$defs", {}),
            "securitySchemes": {
                "ServiceKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A keyledger service key (org `_system`).",
                },
                "ProxyServiceKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "X-Keyledger-Service-Key",
                    "description": "The proxy's own service key (scope keys:verify).",
                },
            },
        },
    }


@routes.get("/openapi.json")
async def openapi(_: web.Request) -> web.Response:
    """The OpenAPI document."""
    return web.json_response(build_openapi())
