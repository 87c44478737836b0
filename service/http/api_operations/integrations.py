"""Integrations: identities, webhooks, a key's usage analytics and secret scanners' leak reports."""

from __future__ import annotations

from service.http import response_shapes as shapes
from service.http.api_operations import (
    AUTHENTICATED,
    COMMAND,
    COMMAND_HEADERS,
    IDEMPOTENCY_KEY,
    IDENTITY,
    IDENTITY_PATH,
    KEY,
    KEY_PATH,
    ON_BEHALF_OF,
    ORG_PATH,
    POSITION,
    READ,
    WITH_BODY,
    Operation,
    param,
)
from service.http.api_operations.headers import ETAG
from service.http.schemas import ConfigureIdentityBody, RegisterWebhookBody
from service.leaks import LeakReport

IDENTITIES: tuple[Operation, ...] = (
    Operation(
        "put",
        IDENTITY,
        "ConfigureIdentity: create or replace an identity's shared rate limits and metadata"
        " (scope keys:write); one IdentityConfigured when something changes. 201 when new.",
        "commands",
        body=ConfigureIdentityBody,
        parameters=[ORG_PATH, IDENTITY_PATH, *COMMAND_HEADERS],
        answers={"200": shapes.IdentityResult, "201": shapes.IdentityResult},
        answer_headers={"200": ETAG, "201": ETAG},
        errors=COMMAND,
        name="configureIdentity",
    ),
    Operation(
        "get",
        IDENTITY,
        "One identity (with ETag; 404 `identity_not_found` when never configured)",
        "queries",
        parameters=[ORG_PATH, IDENTITY_PATH],
        answers={"200": shapes.Identity},
        answer_headers={"200": ETAG},
        errors=(*READ, "409"),
        name="getIdentity",
    ),
)

_HOOKS = "/v1/orgs/{org_id}/webhooks"
_HOOK = f"{_HOOKS}/{{webhook_id}}"
_HOOK_PATH = param("path", "webhook_id", {"type": "string"}, "`wh_` + a 26-character ULID.", True)
WEBHOOKS: tuple[Operation, ...] = (
    Operation(
        "post",
        _HOOKS,
        "Register a webhook endpoint (scope admin): one WebhookRegistered in the log; the"
        " signing secret is answered once, and is never in the log (a replay for a retried"
        " Idempotency-Key answers the same endpoint, its secret null)",
        "webhooks",
        body=RegisterWebhookBody,
        parameters=[ORG_PATH, IDEMPOTENCY_KEY, ON_BEHALF_OF],
        answers={"201": shapes.WebhookCreated},
        errors=(*AUTHENTICATED, *WITH_BODY, "404", "503"),
        name="registerWebhook",
    ),
    Operation(
        "get",
        _HOOKS,
        "The org's webhook endpoints (scope audit:read)",
        "webhooks",
        parameters=[ORG_PATH],
        answers={"200": shapes.WebhookList},
        errors=READ,
        name="listWebhooks",
    ),
    Operation(
        "get",
        _HOOK,
        "One webhook endpoint",
        "webhooks",
        parameters=[ORG_PATH, _HOOK_PATH],
        answers={"200": shapes.WebhookOne},
        errors=READ,
        name="getWebhook",
    ),
    Operation(
        "delete",
        _HOOK,
        "Remove a webhook endpoint (scope admin): one WebhookRemoved in the log; removing it"
        " again changes nothing",
        "webhooks",
        parameters=[ORG_PATH, _HOOK_PATH, IDEMPOTENCY_KEY, ON_BEHALF_OF],
        answers={"200": shapes.WebhookRemoval},
        errors=(*READ, "409"),
        name="removeWebhook",
    ),
    Operation(
        "get",
        f"{_HOOK}/deliveries",
        "Delivery attempts, newest first",
        "webhooks",
        parameters=[
            ORG_PATH,
            _HOOK_PATH,
            param("query", "limit", {"type": "integer", "minimum": 1, "maximum": 500}, "1-500."),
            param("query", "before", POSITION, "A `next_before`."),
        ],
        answers={"200": shapes.DeliveryPage},
        errors=READ,
        name="listWebhookDeliveries",
    ),
)

_GRANULARITY = {"type": "string", "enum": ["minute", "hour", "day"]}
_INSTANT = {"type": "string", "format": "date-time"}
_GITHUB = "GitHub-Public-Key-"
USAGE_AND_LEAKS: tuple[Operation, ...] = (
    Operation(
        "get",
        f"{KEY}/usage",
        "A key's verifications per minute, hour or day (zeros included)",
        "queries",
        parameters=[
            ORG_PATH,
            KEY_PATH,
            param("query", "granularity", _GRANULARITY, "Default hour."),
            param("query", "since", _INSTANT, "From."),
            param("query", "until", _INSTANT, "To."),
        ],
        answers={"200": shapes.KeyUsage},
        errors=READ,
        name="getKeyUsage",
    ),
    Operation(
        "post",
        "/v1/leaks",
        "A secret scanner's leak report (GitHub's partner format; signed)",
        "integrations",
        security=None,
        body=LeakReport,
        parameters=[
            param("header", f"{_GITHUB}Identifier", {"type": "string"}, "Signing key."),
            param("header", f"{_GITHUB}Signature", {"type": "string"}, "base64 DER ECDSA."),
        ],
        answers={"200": shapes.LeakLabels},
        errors=("400", "401", "404", "413", "415", "422", "503"),
        name="reportLeaks",
    ),
)
