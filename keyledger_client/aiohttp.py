"""Protect an aiohttp service with keyledger keys in a few lines (needs aiohttp installed).

    verifier = LocalVerifier(client, nats_url)        # or any object with ``verify``
    app = web.Application(middlewares=[auth_middleware(verifier, scopes=["orders:read"])])

    async def handler(request):
        key = request[VERIFIED_KEY]                   # the caller's VerifiedKey

Each request's ``Authorization: Bearer <secret>`` is verified (with the request's
``Origin``); a refusal is answered with the verdict's status (401, 403 or 429 with
``Retry-After``) and ``{"error": {"code", "message"}}``, before the handler runs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, Protocol

from aiohttp import web
from aiohttp.typedefs import Middleware

from keyledger_client.models import VerifiedKey, VerifyResult

# Where the handler finds the verified key: ``request[VERIFIED_KEY]``.
VERIFIED_KEY = web.RequestKey("keyledger_key", VerifiedKey)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Verifies(Protocol):
    """``LocalVerifier`` or anything verifying a bearer secret the same way."""

    async def verify(
        self,
        secret: str,
        *,
        scopes: Sequence[str] = (),
        origin: str | None = None,
        resource: str | None = None,
        environment: str | None = None,
    ) -> VerifyResult: ...


def bearer_secret(authorization: str | None) -> str | None:
    """The secret of an ``Authorization: Bearer …`` header, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


def refusal(code: str, status: int, retry_after: int | None = None) -> web.Response:
    """The answer to a refused key: the verdict's status and code, nothing about the key."""
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    body: dict[str, Any] = {"error": {"code": code, "message": "the API key was refused"}}
    return web.json_response(body, status=status, headers=headers)


def auth_middleware(
    verifier: Verifies,
    *,
    scopes: Sequence[str] = (),
    environment: str | None = None,
    resource: str | None = None,
    exempt: Collection[str] = (),
) -> Middleware:
    """A middleware that lets through only requests whose bearer key verifies with these
    requirements; paths in ``exempt`` (e.g. ``/healthz``) are not checked."""

    @web.middleware
    async def keyledger_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.path in exempt:
            return await handler(request)
        secret = bearer_secret(request.headers.get("Authorization"))
        if secret is None:
            return refusal("MALFORMED", 401)
        result = await verifier.verify(
            secret,
            scopes=scopes,
            origin=request.headers.get("Origin"),
            resource=resource,
            environment=environment,
        )
        if not result.valid:
            return refusal(result.code, result.http_status, result.retry_after)
        if result.key is not None:
            request[VERIFIED_KEY] = result.key
        return await handler(request)

    return keyledger_auth
