"""keyledger_client.asgi.KeyledgerAuth on raw ASGI apps (and Starlette/FastAPI ones), without
a network: what reaches the app, what a refused caller gets (the same as from the aiohttp
middleware), and which connections pass untouched."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from fastapi import FastAPI, Request

from keyledger_client import VerifiedKey, VerifyResult
from keyledger_client.aiohttp import auth_middleware
from keyledger_client.asgi import (
    VERIFIED_KEY,
    KeyledgerAuth,
    Message,
    Receive,
    Scope,
    Send,
    verified_key,
)

KEY = VerifiedKey(
    id="key_01JD0000000000000000000000",
    org_id="acme",
    name="reader",
    type="secret",
    environment="live",
    scopes=["orders:read"],
)
VERDICTS = {
    "sk_live_good": VerifyResult(valid=True, code="VALID", http_status=200, key=KEY),
    "sk_live_revoked": VerifyResult(valid=False, code="REVOKED", http_status=401, key=KEY),
    "sk_live_weak": VerifyResult(valid=False, code="INSUFFICIENT_SCOPE", http_status=403),
    "sk_live_busy": VerifyResult(valid=False, code="RATE_LIMITED", http_status=429, retry_after=7),
}


@dataclass
class Verdicts:
    """A verifier answering the verdicts above (NOT_FOUND for any other secret), and
    remembering what it was asked: the middleware is what is under test here."""

    asked: list[dict[str, Any]] = field(default_factory=list)

    async def verify(
        self,
        secret: str,
        *,
        scopes: Sequence[str] = (),
        origin: str | None = None,
        resource: str | None = None,
        environment: str | None = None,
    ) -> VerifyResult:
        self.asked.append(
            {
                "secret": secret,
                "scopes": list(scopes),
                "origin": origin,
                "resource": resource,
                "environment": environment,
            }
        )
        unknown = VerifyResult(valid=False, code="NOT_FOUND", http_status=401)
        return VERDICTS.get(secret, unknown)


@dataclass
class Recorder:
    """A raw ASGI app remembering the scopes it was called with, answering 204 to HTTP."""

    scopes: list[Scope] = field(default_factory=list)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.scopes.append(scope)
        if scope["type"] == "http":
            await send({"type": "http.response.start", "status": 204, "headers": []})
            await send({"type": "http.response.body", "body": b""})
        elif scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})


def http_scope(path: str = "/orders", **headers: str) -> Scope:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }


async def run(
    middleware: KeyledgerAuth, scope: Scope, incoming: Sequence[Message] = ()
) -> list[Message]:
    """What the middleware (and the app behind it) sends for ``scope``."""
    pending, sent = list(incoming), []

    async def receive() -> Message:
        return pending.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    await middleware(scope, receive, send)
    return sent


def protected(**options: Any) -> tuple[KeyledgerAuth, Recorder, Verdicts]:
    app, verifier = Recorder(), Verdicts()
    return KeyledgerAuth(app, verifier, **options), app, verifier


def answer(sent: list[Message], kind: str = "http.response") -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the answer in ``sent``."""
    assert [m["type"] for m in sent] == [f"{kind}.start", f"{kind}.body"]
    headers = {k.decode(): v.decode() for k, v in sent[0]["headers"]}
    return sent[0]["status"], headers, sent[1]["body"]


async def test_a_valid_key_reaches_the_app_with_the_verified_key_in_the_state() -> None:
    middleware, app, verifier = protected(
        scopes=["orders:read"], environment="live", resource="res_1"
    )
    scope = http_scope(Authorization="Bearer sk_live_good", Origin="https://shop.example")
    scope["state"] = {"pool": "from the lifespan"}

    assert answer(await run(middleware, scope))[0] == 204
    assert app.scopes == [scope]
    assert scope["state"] == {"pool": "from the lifespan", VERIFIED_KEY: KEY}
    assert verified_key(scope) == KEY
    assert verifier.asked == [
        {
            "secret": "sk_live_good",
            "scopes": ["orders:read"],
            "origin": "https://shop.example",
            "resource": "res_1",
            "environment": "live",
        }
    ]


@pytest.mark.parametrize(
    ("authorization", "status", "code", "retry_after"),
    [
        ("Bearer sk_live_revoked", 401, "REVOKED", None),
        ("Bearer sk_live_unknown", 401, "NOT_FOUND", None),
        ("Bearer sk_live_weak", 403, "INSUFFICIENT_SCOPE", None),
        ("Bearer sk_live_busy", 429, "RATE_LIMITED", "7"),
        (None, 401, "MALFORMED", None),
        ("Basic dXNlcjpwYXNz", 401, "MALFORMED", None),
        ("Bearer   ", 401, "MALFORMED", None),
    ],
)
async def test_a_refused_request_never_reaches_the_app(
    authorization: str | None, status: int, code: str, retry_after: str | None
) -> None:
    middleware, app, _ = protected()
    headers = {"Authorization": authorization} if authorization is not None else {}

    got_status, got_headers, body = answer(await run(middleware, http_scope(**headers)))

    assert app.scopes == []
    assert got_status == status
    assert json.loads(body) == {"error": {"code": code, "message": "the API key was refused"}}
    assert got_headers.get("retry-after") == retry_after
    assert got_headers["content-type"] == "application/json; charset=utf-8"
    assert got_headers["content-length"] == str(len(body))


async def test_the_first_authorization_header_is_the_one_verified() -> None:
    middleware, _, verifier = protected()
    scope = http_scope()
    scope["headers"] = [(b"authorization", b"Bearer sk_live_good"), (b"authorization", b"x")]
    assert answer(await run(middleware, scope))[0] == 204
    assert [asked["secret"] for asked in verifier.asked] == ["sk_live_good"]


async def test_an_exempt_path_passes_unchecked() -> None:
    middleware, app, verifier = protected(exempt={"/healthz"})
    assert answer(await run(middleware, http_scope("/healthz")))[0] == 204
    assert len(app.scopes) == 1 and verifier.asked == []
    assert "state" not in app.scopes[0]


async def test_lifespan_passes_through_untouched() -> None:
    middleware, app, verifier = protected()
    scope: Scope = {"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}
    incoming = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]

    sent = await run(middleware, scope, incoming)

    assert [m["type"] for m in sent] == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
    assert app.scopes == [scope] and verifier.asked == []


def websocket_scope(extensions: dict[str, Any], **headers: str) -> Scope:
    return {**http_scope("/feed", **headers), "type": "websocket", "extensions": extensions}


async def test_a_refused_websocket_handshake_gets_the_http_answer_where_the_server_can() -> None:
    middleware, app, _ = protected()
    scope = websocket_scope({"websocket.http.response": {}}, Authorization="Bearer sk_live_busy")

    status, headers, body = answer(await run(middleware, scope), "websocket.http.response")

    assert app.scopes == []
    assert (status, headers["retry-after"]) == (429, "7")
    assert b'"RATE_LIMITED"' in body


async def test_a_refused_websocket_handshake_is_closed_elsewhere() -> None:
    middleware, app, _ = protected()
    sent = await run(middleware, websocket_scope({}, Authorization="Bearer sk_live_revoked"))
    assert app.scopes == []
    assert sent == [{"type": "websocket.close", "code": 1008}]


async def test_a_valid_websocket_handshake_reaches_the_app_with_the_key() -> None:
    middleware, app, _ = protected()
    scope = websocket_scope({}, Authorization="Bearer sk_live_good")
    assert await run(middleware, scope) == []
    assert app.scopes == [scope] and verified_key(scope) == KEY


@pytest.mark.parametrize(
    "authorization", ["Bearer sk_live_busy", "Bearer sk_live_weak", "Bearer sk_live_revoked", ""]
)
async def test_the_aiohttp_middleware_refuses_with_the_very_same_answer(
    authorization: str,
) -> None:
    middleware, _, _ = protected(scopes=["orders:read"])
    asgi_status, asgi_headers, asgi_body = answer(
        await run(middleware, http_scope(Authorization=authorization))
    )

    async def unreached(_: web.Request) -> web.StreamResponse:
        raise AssertionError("the handler ran")

    request = make_mocked_request("GET", "/orders", headers={"Authorization": authorization})
    response = await auth_middleware(Verdicts(), scopes=["orders:read"])(request, unreached)

    assert isinstance(response, web.Response)
    assert (response.status, response.body) == (asgi_status, asgi_body)
    assert response.headers["Content-Type"] == asgi_headers["content-type"]
    assert response.headers.get("Retry-After") == asgi_headers.get("retry-after")


async def test_fastapi_handlers_find_the_key_in_request_state() -> None:
    api = FastAPI()
    verifier = Verdicts()
    api.add_middleware(KeyledgerAuth, verifier=verifier, scopes=["orders:read"])

    @api.get("/orders")
    async def orders(request: Request) -> dict[str, str]:
        assert request.state.keyledger_key is verified_key(request)
        return {"key_id": verified_key(request).id}

    transport = httpx.ASGITransport(app=api)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:
        good = await http.get("/orders", headers={"Authorization": "Bearer sk_live_good"})
        weak = await http.get("/orders", headers={"Authorization": "Bearer sk_live_weak"})

    assert (good.status_code, good.json()) == (200, {"key_id": KEY.id})
    assert (weak.status_code, weak.json()["error"]["code"]) == (403, "INSUFFICIENT_SCOPE")
    assert [asked["scopes"] for asked in verifier.asked] == [["orders:read"], ["orders:read"]]


def test_verified_key_of_an_unprotected_request_is_a_key_error() -> None:
    with pytest.raises(KeyError):
        verified_key(http_scope())
    with pytest.raises(KeyError):
        verified_key({"state": {VERIFIED_KEY: "not a key"}})
