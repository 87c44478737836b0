"""Protect an aiohttp service with keyledger keys in a few lines (needs aiohttp installed).

    verifier = LocalVerifier(client, nats_url)        # or any object with ``verify``
    app = web.Application(middlewares=[auth_middleware(verifier, scopes=["orders:read"])])

    async def handler(request):
        key = request[VERIFIED_KEY]                   # the caller's VerifiedKey

Each request's ``Authorization: Bearer <secret>`` is verified (with the request's
``Origin``); a refusal is answered with the verdict's status (401, 403 or 429 with
``Retry-After``) and ``{"error": {"code", "message"}}``, before the handler runs; with
no verdict to be had (keyledger unreachable, the service key refused) it is 503
``verifier_unavailable`` with ``Retry-After``.
A ``KeyledgerClient`` given as the verifier asks keyledger on every request.
The decision is ``keyledger_client.admission``'s, shared with ``keyledger_client.asgi``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence

from aiohttp import web
from aiohttp.typedefs import Middleware

from keyledger_client.admission import Gate, Refusal, Verifies, bearer_secret
from keyledger_client.client import KeyledgerClient
from keyledger_client.models import VerifiedKey

__all__ = ["VERIFIED_KEY", "Verifies", "auth_middleware", "bearer_secret", "refusal"]

# Where the handler finds the verified key: ``request[VERIFIED_KEY]``.
VERIFIED_KEY = web.RequestKey("keyledger_key", VerifiedKey)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def refusal(refused: Refusal) -> web.Response:
    """The aiohttp response refusing a request."""
    return web.Response(status=refused.status, body=refused.body, headers=refused.headers)


def auth_middleware(
    verifier: Verifies | KeyledgerClient,
    *,
    scopes: Sequence[str] = (),
    environment: str | None = None,
    resource: str | None = None,
    exempt: Collection[str] = (),
) -> Middleware:
    """A middleware that lets through only requests whose bearer key verifies with these
    requirements; paths in ``exempt`` (e.g. ``/healthz``) are not checked."""
    gate = Gate.of(
        verifier, scopes=scopes, environment=environment, resource=resource, exempt=exempt
    )

    @web.middleware
    async def keyledger_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if gate.exempts(request.path):
            return await handler(request)
        headers = request.headers
        outcome = await gate.admit(headers.get("Authorization"), headers.get("Origin"))
        if isinstance(outcome, Refusal):
            return refusal(outcome)
        if outcome.key is not None:
            request[VERIFIED_KEY] = outcome.key
        return await handler(request)

    return keyledger_auth
