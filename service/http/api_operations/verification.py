"""Verification: ``/v1/verify``, the reverse proxies' ``/v1/authorize``, usage reports."""

from __future__ import annotations

from events.vocabulary import ENVIRONMENTS
from service.http import response_shapes as shapes
from service.http.api_operations import AUTHENTICATED, MIN_POSITION, WITH_BODY, Operation, param
from service.http.api_operations.headers import RATE_LIMIT, header_ref
from service.http.usage_routes import UsageReport
from service.http.verify_routes import VerifyBody

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "post",
        "/v1/verify",
        "Verify a bearer key or a signed request (200 with the verdict in the body; 503"
        " `log_truncated` while the log is missing events)",
        "verification",
        body=VerifyBody,
        answers={"200": shapes.VerifyResult},
        errors=(*AUTHENTICATED, *WITH_BODY, "503"),
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
            param("query", "resource", {"type": "string"}, "The protected resource."),
            param("query", "scopes", {"type": "string"}, "Required scopes, comma-separated."),
            param("query", "environment", {"type": "string", "enum": list(ENVIRONMENTS)}, "Env."),
            param(
                "query",
                "cost",
                {"type": "integer", "minimum": 0, "maximum": 1000},
                "What the request counts for against rate limits and credits (default 1).",
            ),
            MIN_POSITION,
            param(
                "header",
                "X-Forwarded-For",
                {"type": "string"},
                "The client's address, believed from KEYLEDGER_TRUSTED_PROXIES only.",
            ),
            param("header", "X-Real-IP", {"type": "string"}, "As X-Forwarded-For, without it."),
            param("header", "X-API-Key", {"type": "string"}, "Signed request: the key id."),
            param("header", "X-API-Signature", {"type": "string"}, "Signed request."),
            param("header", "X-API-Timestamp", {"type": "string"}, "Unix seconds (replay)."),
            param("header", "X-Forwarded-Method", {"type": "string"}, "The proxied method."),
            param("header", "X-Forwarded-Uri", {"type": "string"}, "The proxied path+query."),
        ],
        answers={"200": shapes.VerifyResult},
        # verify_routes.authorize: the rate-limit headers whenever the key has limits;
        # Retry-After on RATE_LIMITED (and the proxy's own key over its limit), not on
        # USAGE_EXCEEDED.
        answer_headers={
            "200": RATE_LIMIT,
            "429": {**RATE_LIMIT, "Retry-After": header_ref("VerdictRetryAfter")},
        },
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
        errors=(*AUTHENTICATED, *WITH_BODY),
        name="reportUsage",
    ),
)
