"""Requests that aiohttp refuses before any handler runs, without repeating a secret.

A malformed request line or header (``Authorization: Bearer sk_live_…\\x01``)
is refused by aiohttp's HTTP parser itself, with a plain-text 400 that quotes
the offending line, and logged with that line in the exception. No middleware
sees it, and aiohttp has no hook for it, so its one error renderer is wrapped
(once, idempotently) to redact secret-shaped text from the answer and from
the logged exception (docs/security.md §2: no error or log line repeats a secret).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web_protocol

from service.redaction import redact_text

_ORIGINAL_HANDLE_ERROR = web_protocol.RequestHandler.handle_error


class RefusedRequest(Exception):
    """What aiohttp's parser refused, with secret-shaped text redacted."""


def _handle_error(
    self: web_protocol.RequestHandler,
    request: Any,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> Any:
    if message is not None:
        message = redact_text(message)
    if exc is not None and status < 500:
        exc = RefusedRequest(redact_text(str(exc)))
    return _ORIGINAL_HANDLE_ERROR(self, request, status, exc, message)


def redact_refused_requests() -> None:
    """Make aiohttp's own 4xx answers and their log lines redact secrets."""
    # Replacing a method of aiohttp's class is the point here (it has no hook for this).
    web_protocol.RequestHandler.handle_error = _handle_error  # type: ignore[method-assign]
