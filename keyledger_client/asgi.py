"""Protect an ASGI service (FastAPI, Starlette, or any ASGI app) with keyledger keys.

    app = FastAPI(lifespan=...)                       # start the verifier in the lifespan
    app.add_middleware(KeyledgerAuth, verifier=verifier, scopes=["orders:read"])

    @app.get("/orders")
    async def orders(request: Request):
        key = verified_key(request)                   # the caller's VerifiedKey

A plain ASGI middleware, so the client needs no web framework: it reads the raw scope.
It decides exactly as ``keyledger_client.aiohttp`` does (``keyledger_client.admission``):
each request's ``Authorization: Bearer <secret>`` is verified with its ``Origin``; a
refusal is answered with the verdict's status (401, 403 or 429 with ``Retry-After``) and
``{"error": {"code", "message"}}`` before the app sees the request (503
``verifier_unavailable`` when keyledger gives no verdict). The verified key is
put in the scope's ``state`` (Starlette's ``request.state``) under ``VERIFIED_KEY``.

WebSocket handshakes are verified too (a protected path stays protected whatever the
transport): a refused one gets the same HTTP answer when the server supports the
``websocket.http.response`` extension (uvicorn does), else it is closed before accepting
(code 1008; the server answers the handshake 403). Lifespan and any other scope pass.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Mapping, MutableMapping, Sequence
from typing import Any

from keyledger_client.admission import Gate, Refusal, Verifies
from keyledger_client.client import KeyledgerClient
from keyledger_client.models import VerifiedKey

__all__ = ["VERIFIED_KEY", "KeyledgerAuth", "verified_key"]

# The ASGI types, as the ASGI spec (and Starlette) spells them.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# Where the app finds the verified key: ``scope["state"][VERIFIED_KEY]``, i.e.
# ``request.state.keyledger_key`` in Starlette and FastAPI.
VERIFIED_KEY = "keyledger_key"
# The connections a key is asked of; lifespan (and anything newer) passes untouched.
_CHECKED = frozenset({"http", "websocket"})
# Close code for a refused WebSocket when the server cannot send an HTTP answer instead.
_POLICY_VIOLATION = 1008


class KeyledgerAuth:
    """ASGI middleware letting through only requests whose bearer key verifies with these
    requirements; paths in ``exempt`` (e.g. ``/healthz``) are not checked.

    ``verifier``: a ``LocalVerifier`` (or anything with its ``verify``), or a
    ``KeyledgerClient`` to ask keyledger on every request.
    """

    def __init__(
        self,
        app: ASGIApp,
        verifier: Verifies | KeyledgerClient,
        *,
        scopes: Sequence[str] = (),
        environment: str | None = None,
        resource: str | None = None,
        exempt: Collection[str] = (),
    ) -> None:
        self.app = app
        self.gate = Gate.of(
            verifier, scopes=scopes, environment=environment, resource=resource, exempt=exempt
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in _CHECKED or self.gate.exempts(scope["path"]):
            await self.app(scope, receive, send)
            return
        outcome = await self.gate.admit(header(scope, b"authorization"), header(scope, b"origin"))
        if isinstance(outcome, Refusal):
            if scope["type"] == "http":
                await respond(send, "http.response", outcome)
            elif "websocket.http.response" in scope.get("extensions", {}):
                await respond(send, "websocket.http.response", outcome)
            else:
                await send({"type": "websocket.close", "code": _POLICY_VIOLATION})
            return
        if outcome.key is not None:
            scope.setdefault("state", {})[VERIFIED_KEY] = outcome.key
        await self.app(scope, receive, send)


def verified_key(connection: Mapping[str, Any]) -> VerifiedKey:
    """The caller's key, from an ASGI scope or a Starlette ``Request`` (a mapping over its
    scope) that ``KeyledgerAuth`` let through. KeyError on an exempt or unprotected path."""
    key = connection["state"][VERIFIED_KEY]
    if not isinstance(key, VerifiedKey):
        raise KeyError(VERIFIED_KEY)
    return key


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case) in the scope, or None."""
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            # latin-1 maps every byte, as Starlette decodes headers; keys are ASCII anyway.
            return str(value.decode("latin-1"))
    return None


async def respond(send: Send, kind: str, refused: Refusal) -> None:
    """Send ``refused`` as an HTTP answer; ``kind`` is the message prefix of the connection
    (``http.response``, or ``websocket.http.response`` for a refused handshake)."""
    body = refused.body
    headers = [(name.lower().encode(), value.encode()) for name, value in refused.headers.items()]
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": f"{kind}.start", "status": refused.status, "headers": headers})
    await send({"type": f"{kind}.body", "body": body})
