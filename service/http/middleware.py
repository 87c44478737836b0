"""Request id, error mapping and the access log: one middleware, outermost."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import web

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
# Sees every request: (route template, method, status, seconds); set by service.http.metrics.
RequestObserver = Callable[[str, str, int, float], None]
REQUEST_OBSERVER: web.AppKey[RequestObserver] = web.AppKey("request_observer")


class RequestContext:
    """What the access line says about a request besides its route and status.

    One object per request, set by the middleware: handlers fill in the
    caller and a verify's verdict with attribute writes, and the middleware
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


def context_of(request: web.Request) -> RequestContext:
    """The request's ``RequestContext`` (a detached one outside the middleware)."""
    context = request.get(CONTEXT)
    return context if context is not None else RequestContext("unknown")


def request_id_of(request: web.Request) -> str:
    """The request's id (from ``X-Request-Id`` when well-formed, else generated)."""
    return context_of(request).request_id


def _route_name(request: web.Request) -> str:
    info = request.match_info.route.resource
    return info.canonical if info is not None else "unmatched"


# Route template and the app's request observer, by route: looked up once per route, not
# through four properties and a mapping lookup per request. Bounded: an app's routes are
# few, and the routes of "no such route" answers (made anew each time) are not kept.
_ROUTES: dict[web.AbstractRoute, tuple[str, RequestObserver | None]] = {}
_ROUTES_MAX = 4096


def _route_of(request: web.Request) -> tuple[str, RequestObserver | None]:
    route = request.match_info.route
    known = _ROUTES.get(route)
    if known is None:
        known = (_route_name(request), request.app.get(REQUEST_OBSERVER))
        if route.resource is not None:
            if len(_ROUTES) >= _ROUTES_MAX:
                _ROUTES.clear()
            _ROUTES[route] = known
    return known


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Assign the request id, turn every failure into a JSON error, log one line."""
    given = request.headers.get("X-Request-Id")
    # A secret-shaped id would be echoed in every answer and stored in the event's actor.
    if given is not None and REQUEST_ID_TEXT.matches(given) and not looks_like_secret(given):
        request_id = given
    else:
        request_id = new_request_id()
    context = request[CONTEXT] = RequestContext(request_id)
    started = time.perf_counter()
    try:
        response = await handler(request)
    except KeyledgerError as exc:
        response = error_response(exc.code, exc.message, request_id, exc.details)
    except web.HTTPRequestEntityTooLarge:
        response = error_response("payload_too_large", "the body is over 64 KiB", request_id)
    except web.HTTPNotFound:
        response = error_response("not_found", "no such route", request_id)
    except web.HTTPMethodNotAllowed as exc:
        response = error_response(
            "method_not_allowed",
            f"{request.method} is not allowed here",
            request_id,
            headers={"Allow": ",".join(sorted(exc.allowed_methods))},
        )
    except web.HTTPException as exc:
        code = exc.reason.lower().replace(" ", "_")
        response = json_error(code, exc.status, exc.reason, request_id)
    except Exception:
        log.exception("unhandled_error", request_id=request_id, route=_route_name(request))
        response = error_response("internal_error", "internal error", request_id)
    if type(response) is EncodedResponse:
        response.request_id = request_id  # written with its head, no header map
    else:
        response.headers["X-Request-Id"] = request_id
    seconds = time.perf_counter() - started
    route, observe = _route_of(request)
    method, status = request.method, response.status
    if observe is not None:
        observe(route, method, status, seconds)
    log_access(
        request_id, method, route, status, seconds * 1000, context.caller_id, context.outcome
    )
    return response
