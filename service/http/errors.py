"""The one place where error codes become HTTP statuses and JSON bodies."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.errors import ErrorCode
from service.redaction import redact_text, redact_value

# Every ErrorCode has its status here (tests/unit/test_error_codes.py checks it is total).
STATUS_BY_CODE: dict[ErrorCode, int] = {
    "malformed_json": 400,
    "invalid_json": 400,
    "invalid_header": 400,
    "invalid_request": 400,
    "header_too_large": 431,
    "unauthenticated": 401,
    "invalid_api_key": 401,
    "api_key_inactive": 401,
    "insufficient_scope": 403,
    "not_found": 404,
    "key_not_found": 404,
    "org_not_found": 404,
    "method_not_allowed": 405,
    "key_not_mutable": 409,
    "key_exists": 409,
    "active_key_limit": 409,
    # A bulk revocation selecting more keys than one transaction may take.
    "too_many_keys": 409,
    # A key whose events a consumer of the log could not apply (docs/security.md §5).
    "key_quarantined": 409,
    "identity_not_found": 404,
    "identity_quarantined": 409,
    "version_mismatch": 412,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "validation_error": 422,
    "idempotency_key_reused": 422,
    "webhook_not_found": 404,
    "invalid_webhook_url": 422,
    "webhook_quarantined": 409,
    "invalid_signature": 401,
    # Read queries (docs/api.md#reads).
    "invalid_cursor": 422,
    "invalid_limit": 422,
    "invalid_min_position": 422,
    "invalid_timestamp": 422,
    "invalid_time_range": 422,
    "unknown_status": 422,
    "unknown_event_type": 422,
    "rate_limited": 429,
    "internal_error": 500,
    "not_caught_up": 503,
    # The log lost events its witnesses saw (docs/security.md §6): verify and commands fail closed.
    "log_truncated": 503,
    "log_gap": 503,
    "unavailable": 503,
    "overloaded": 503,
}


def error_response(
    code: ErrorCode,
    message: str,
    request_id: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """``{"error": {code, message, request_id, details?}}`` with the code's status."""
    return json_error(code, STATUS_BY_CODE[code], message, request_id, details, headers)


def json_error(
    code: str,
    status: int,
    message: str,
    request_id: str,
    details: Any = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """The error body with an explicit status; ``code`` may come from outside the list
    (an aiohttp ``HTTPException`` passed through: its reason, snake-cased).

    Message and details are scrubbed of secret-shaped text here, for every
    error at once: they may quote what the client sent (an unknown query
    parameter, an unknown body field's name), and that may be a secret.
    """
    error: dict[str, Any] = {
        "code": code,
        "message": redact_text(message),
        "request_id": request_id,
    }
    if details is not None:
        error["details"] = redact_value(details)
    if isinstance(details, dict) and isinstance(details.get("retry_after"), int):
        # 429 for a caller over its own rate limit carries Retry-After.
        headers = {**(headers or {}), "Retry-After": str(details["retry_after"])}
    return web.json_response({"error": error}, status=status, headers=headers)
