"""The one error type of keyledger and its closed list of codes.

Everything that refuses a request raises ``KeyledgerError`` with one of the
``ErrorCode`` values; the HTTP layer maps every code to a status in one table
(``service.http.errors``, checked to be total). A code that is not in the
list is a type error, not a silent 400. Messages never contain secrets.
"""

from __future__ import annotations

from typing import Any, Final, Literal, get_args

ErrorCode = Literal[
    # The request itself (body, headers, route).
    "malformed_json",
    "invalid_json",
    "invalid_header",
    "invalid_request",
    "header_too_large",
    "not_found",
    "method_not_allowed",
    "payload_too_large",
    "unsupported_media_type",
    "validation_error",
    # Who is calling.
    "unauthenticated",
    "invalid_api_key",
    "api_key_inactive",
    "insufficient_scope",
    "rate_limited",
    # Keys and orgs.
    "key_not_found",
    "org_not_found",
    "key_not_mutable",
    "key_exists",
    "active_key_limit",
    "key_quarantined",
    "version_mismatch",
    "idempotency_key_reused",
    "too_many_keys",
    # Webhooks.
    "webhook_not_found",
    "invalid_webhook_url",
    "webhook_quarantined",
    # Leak reports.
    "invalid_signature",
    # Identities.
    "identity_not_found",
    "identity_quarantined",
    # Read queries.
    "invalid_cursor",
    "invalid_limit",
    "invalid_min_position",
    "invalid_timestamp",
    "invalid_time_range",
    "unknown_status",
    "unknown_event_type",
    # The service.
    "internal_error",
    "not_caught_up",
    "log_truncated",
    "log_gap",
    "unavailable",
    "overloaded",
]
ERROR_CODES: Final[tuple[ErrorCode, ...]] = get_args(ErrorCode)


class KeyledgerError(Exception):
    """A refusal with a stable, documented code."""

    def __init__(self, code: ErrorCode, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.details = details
