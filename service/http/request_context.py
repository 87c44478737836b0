"""Request id, error mapping, metrics and the access log, around every route's handler.

Every handler is wrapped by ``in_context`` as its route is added
(``service.http.routing.serve_routes``): the app runs no aiohttp middleware. A middleware would
cost every request two more coroutine layers and a lookup of the cached chain
in aiohttp (≈ 5 % of a verify's instructions), and the wrapper knows its
route's template and the metrics observer when it is made, not per request.

This module is on the verify path and is compiled with it in a compiled
build (setup.py): the routing that runs once, at the start, is in
``service.http.routing``.
"""

from __future__ import annotations

import functools
import itertools
import os
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage
from aiohttp.web_protocol import RequestPayloadError

from service.domain.vocabulary import REQUEST_ID as REQUEST_ID_TEXT
from service.errors import KeyledgerError
from service.http.encoded import EncodedResponse
from service.http.errors import error_response, json_error
from service.log_config import log_access
from service.redaction import looks_like_secret

log = structlog.get_logger("keyledger.http")
# Generated request ids: "req_" + 32 hex digits, a random per-process half and a
# counter half: unique without a syscall or a uuid4 per request.
_ID_PREFIX = f"req_{os.urandom(8).hex()}"
_ID_COUNTER = itertools.count(1)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Sees every request: (route template, method, status, seconds); from service.http.metrics.
RequestObserver = Callable[[str, str, int, float], None]
# The route of the requests no route takes, in logs and metrics.
UNMATCHED = "unmatched"


class RequestContext:
    """What the access line says about a request besides its route and status.

    One object per request, set by ``in_context``: handlers fill in the
    caller and a verify's verdict with attribute writes, and the wrapper
    reads them without a lookup that may miss (a missing key in the
    request's mapping costs an exception).
    """

    __slots__ = ("caller_id", "outcome", "request_id")

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        # The service key that called, once authenticated.
        self.caller_id: str | None = None
        # A verify's verdict code (never the credential).
        self.outcome: str | None = None


CONTEXT = web.RequestKey("keyledger_context", RequestContext)


def new_request_id() -> str:
    """A request id of this process (for a request that brought no usable one)."""
    return f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"


def request_id_given(request: web.Request) -> str:
    """The request's ``X-Request-Id`` when well-formed, else a generated id."""
    given = request.headers.get("X-Request-Id")
    # A secret-shaped id would be echoed in every answer and stored in the event's actor.
    if given is not None and REQUEST_ID_TEXT.matches(given) and not looks_like_secret(given):
        return given
    return new_request_id()


def context_of(request: web.Request) -> RequestContext:
    """The request's ``RequestContext`` (a detached one outside ``in_context``)."""
    context = request.get(CONTEXT)
    return context if context is not None else RequestContext("unknown")


def request_id_of(request: web.Request) -> str:
    """The request's id (from ``X-Request-Id`` when well-formed, else generated)."""
    return context_of(request).request_id


def error_answer(
    exc: Exception, request: web.Request, request_id: str, route: str
) -> web.StreamResponse:
    """The JSON error for what a handler raised (a 500 for anything unforeseen, logged:
    called where ``exc`` is being handled, so that its traceback is at hand)."""
    if isinstance(exc, KeyledgerError):
        return error_response(exc.code, exc.message, request_id, exc.details)
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return error_response("payload_too_large", "the body is over 64 KiB", request_id)
    if isinstance(exc, web.HTTPNotFound):
        return error_response("not_found", "no such route", request_id)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        return error_response(
            "method_not_allowed",
            f"{request.method} is not allowed here",
            request_id,
            headers={"Allow": ",".join(sorted(exc.allowed_methods))},
        )
    if isinstance(exc, web.HTTPException):
        code = exc.reason.lower().replace(" ", "_")
        return json_error(code, exc.status, exc.reason, request_id)
    if isinstance(exc, BadHttpMessage | RequestPayloadError):
        # Raised by the body's read: bytes that do not decode as Content-Encoding says, or
        # fewer than Content-Length or the chunks promised. The connection is closed after
        # the answer: what follows on it cannot be told from the rest of this body. The
        # body is ended here, or aiohttp would read on after the answer and log the same
        # error as its own unhandled one.
        answer = error_response(
            "invalid_request",
            "the body is not what its Content-Encoding, Content-Length or chunks say",
            request_id,
        )
        answer.force_close()
        request.content.feed_eof()
        return answer
    if isinstance(exc, ConnectionResetError):
        # The client left while its body was read: nothing can be answered, and it is no
        # failure of the server's. 499 in the access line and metrics, as nginx counts it.
        return json_error(
            "client_closed_request", 499, "the client closed the connection", request_id
        )
    log.exception("unhandled_error", request_id=request_id, route=route)
    return error_response("internal_error", "internal error", request_id)


def with_request_id(response: web.StreamResponse, request_id: str) -> None:
    """Give ``response`` its ``X-Request-Id``."""
    if type(response) is EncodedResponse:
        response.request_id = request_id  # written with its head, no header map
    else:
        response.headers["X-Request-Id"] = request_id


def in_context(handler: Handler, route: str, observe: RequestObserver | None) -> Handler:
    """``handler`` of the route ``route`` (its template), with the request's id, every
    failure as a JSON error, its duration observed and its one access line."""

    @functools.wraps(handler)
    async def in_request_context(request: web.Request) -> web.StreamResponse:
        request_id = request_id_given(request)
        context = request[CONTEXT] = RequestContext(request_id)
        started = time.perf_counter()
        try:
            response = await handler(request)
        except Exception as exc:
            response = error_answer(exc, request, request_id, route)
        with_request_id(response, request_id)
        seconds = time.perf_counter() - started
        method, status = request.method, response.status
        if observe is not None:
            observe(route, method, status, seconds)
        log_access(
            request_id, method, route, status, seconds * 1000, context.caller_id, context.outcome
        )
        return response

    return in_request_context
