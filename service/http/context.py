"""Typed application keys and the per-request caller lookup."""

from __future__ import annotations

from datetime import datetime

from aiohttp import web
from multidict import CIMultiDictProxy

from service.bootstrap import Keyledger
from service.errors import KeyledgerError
from service.http.request_context import context_of
from service.settings import Settings
from service.verification.callers import Caller

SETTINGS = web.AppKey("settings", Settings)
# The running service (``service.bootstrap``); set while the app runs.
KEYLEDGER = web.AppKey("keyledger", Keyledger)


def keyledger(request: web.Request) -> Keyledger:
    """The service the request's app runs."""
    return request.app[KEYLEDGER]


def credential_header(headers: CIMultiDictProxy[str], name: str) -> str | None:
    """The one ``name`` header carrying a credential; two of them are refused.

    With two, which one wins would depend on the proxy in front: an org-limited
    key first and an admin key second must not mean something different from
    the reverse order.
    """
    values = headers.getall(name, [])
    if len(values) > 1:
        raise KeyledgerError("invalid_header", f"send one {name} header, not {len(values)}")
    return values[0] if values else None


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def authenticate(
    request: web.Request, now: datetime | None = None, service: Keyledger | None = None
) -> Caller:
    """The calling service key (401 when absent, malformed, unknown or inactive).

    ``now`` and ``service``: the request's instant and service when the route has
    them already.
    """
    callers = (service or keyledger(request)).callers
    secret = bearer_token(credential_header(request.headers, "Authorization"))
    caller = callers.recognised(secret, now) or await callers.authenticate(secret)
    context_of(request).caller_id = caller.key_id
    return caller
