"""The response headers ``/openapi.json`` declares, once each, under ``components.headers``.

Operations name them with ``header_ref`` (an OpenAPI reference), by status, in
their ``answer_headers``. A reference cannot override ``required``, so a header
sent on some answers of a status only (the rate-limit headers of a key without
limits are absent) is its own entry, not required.
"""

from __future__ import annotations

from typing import Any

_REF = "#/components/headers/{name}"
_SECONDS = {"type": "integer", "minimum": 0}


def _header(description: str, schema: dict[str, Any], required: bool) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


# Component name → OpenAPI header object.
HEADERS: dict[str, dict[str, Any]] = {
    "RequestId": _header(
        "The request's id: the `X-Request-Id` it brought when well-formed, else one generated;"
        " also in the access log and in an error's `request_id`.",
        {"type": "string", "minLength": 1},
        True,
    ),
    "ETag": _header(
        'The version of what the answer holds, `"<version>"`: for `If-Match` on a command,'
        " `If-None-Match` on a read.",
        {"type": "string", "pattern": '^"[0-9]+"$'},
        True,
    ),
    "RetryAfter": _header(
        "Seconds until the caller's service key is under its rate limit again.",
        _SECONDS,
        True,
    ),
    "VerdictRetryAfter": _header(
        "Seconds until the key is under its rate limit again (`RATE_LIMITED`, or the proxy's"
        " own service key over its limit); absent for `USAGE_EXCEEDED`.",
        _SECONDS,
        False,
    ),
    "RateLimitLimit": _header(
        "The limit closest to its end (keys with rate limits only): its number of uses.",
        _SECONDS,
        False,
    ),
    "RateLimitRemaining": _header(
        "The limit closest to its end (keys with rate limits only): uses left in its window.",
        _SECONDS,
        False,
    ),
    "RateLimitReset": _header(
        "The limit closest to its end (keys with rate limits only): seconds until it resets.",
        _SECONDS,
        False,
    ),
}


def header_ref(name: str) -> dict[str, str]:
    """A reference to the header ``name`` of ``HEADERS``."""
    if name not in HEADERS:
        raise KeyError(f"no header {name!r} in components.headers")
    return {"$ref": _REF.format(name=name)}


REQUEST_ID = {"X-Request-Id": header_ref("RequestId")}
ETAG = {"ETag": header_ref("ETag")}
RATE_LIMIT = {
    "RateLimit-Limit": header_ref("RateLimitLimit"),
    "RateLimit-Remaining": header_ref("RateLimitRemaining"),
    "RateLimit-Reset": header_ref("RateLimitReset"),
}
