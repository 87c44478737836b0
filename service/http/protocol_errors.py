"""Requests that aiohttp refuses before any handler runs: the JSON error, one log line.

A malformed request line or header (a control character, a line over 8190
bytes) is refused by aiohttp's HTTP parser itself: no handler sees it.
aiohttp then calls ``RequestHandler.handle_error``, which would answer a
plain-text 400 quoting the offending line (perhaps ``Authorization: Bearer
sk_live_…``) and log "Error handling request" at error level. That one method
is replaced here (aiohttp has no hook for it), so such a request gets what
every other error gets: the ``{"error": …}`` body with a stable code
(``header_too_large``, ``invalid_request``) and a request id, and the one
``request`` access line. Nothing the client sent is repeated. Server errors
(500) still go to aiohttp's own handler.
"""

from __future__ import annotations

from typing import Any

from aiohttp import http_exceptions, web_protocol

from service.errors import ErrorCode
from service.http.errors import STATUS_BY_CODE, error_response
from service.http.request_context import new_request_id
from service.log_config import log_access

_ORIGINAL_HANDLE_ERROR = web_protocol.RequestHandler.handle_error
_MESSAGES: dict[ErrorCode, str] = {
    "header_too_large": "the request line or a header line is over 8190 bytes",
    "invalid_request": "malformed HTTP request (request line or header)",
}


def _handle_error(
    self: web_protocol.RequestHandler,
    request: Any,
    status: int = 500,
    exc: BaseException | None = None,
    message: str | None = None,
) -> Any:
    if status >= 500:
        return _ORIGINAL_HANDLE_ERROR(self, request, status, exc, message)
    if request.writer.output_size > 0:
        # As aiohttp's own: an answer has started, this connection cannot carry another.
        raise ConnectionError("Response is sent already, cannot send the error")
    code: ErrorCode = (
        "header_too_large" if isinstance(exc, http_exceptions.LineTooLong) else "invalid_request"
    )
    request_id = new_request_id()
    response = error_response(code, _MESSAGES[code], request_id)
    response.headers["X-Request-Id"] = request_id
    response.force_close()
    method = getattr(request, "method", "") or "-"
    log_access(request_id, method, "unmatched", STATUS_BY_CODE[code], 0.0, None)
    return response


def redact_refused_requests() -> None:
    """Answer aiohttp's own refusals with keyledger's JSON error and access line."""
    # Replacing a method of aiohttp's class is the point here (it has no hook for this).
    web_protocol.RequestHandler.handle_error = _handle_error  # type: ignore[method-assign]
