"""Both middlewares fail closed when keyledger gives no verdict: unreachable, or refusing the
protected service's own key (one without keys:verify). The caller gets 503
verifier_unavailable with Retry-After and a JSON body, never a 500 or a traceback; the log
gets one line saying why, without a secret. And a request with no bearer key at all is
challenged (WWW-Authenticate: Bearer, RFC 6750) by both."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from keyledger_client import KeyledgerClient, RetryPolicy
from keyledger_client.aiohttp import auth_middleware
from keyledger_client.asgi import KeyledgerAuth, Receive, Scope, Send
from service.embedded import free_port
from tests.integration.test_client_api import base_url

# GET /orders with these headers: status, headers (names in lower case), JSON body.
Get = Callable[[dict[str, str]], Awaitable[tuple[int, dict[str, str], Any]]]
ONCE = RetryPolicy(attempts=1)
CUSTOMER = "sk_live_2b7Qm4kP9xZr8Tn3Hv6Wc1Yd5Fg0JsLe"


async def ok(_: web.Request) -> web.Response:
    return web.json_response({"handled": True})


async def asgi_ok(scope: Scope, receive: Receive, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b'{"handled": true}'})


@contextlib.asynccontextmanager
async def aiohttp_service(kl: KeyledgerClient) -> AsyncIterator[Get]:
    app = web.Application(middlewares=[auth_middleware(kl, scopes=["orders:read"])])
    app.router.add_get("/orders", ok)
    async with TestClient(TestServer(app)) as http:

        async def get(headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
            async with http.get("/orders", headers=headers) as response:
                headers = {name.lower(): value for name, value in response.headers.items()}
                return response.status, headers, json.loads(await response.read())

        yield get


@contextlib.asynccontextmanager
async def asgi_service(kl: KeyledgerClient) -> AsyncIterator[Get]:
    protected = KeyledgerAuth(asgi_ok, kl, scopes=["orders:read"])
    transport = httpx.ASGITransport(app=protected)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:

        async def get(headers: dict[str, str]) -> tuple[int, dict[str, str], Any]:
            response = await http.get("/orders", headers=headers)
            return response.status_code, dict(response.headers), response.json()  # lower case

        yield get


SERVICES = {"aiohttp": aiohttp_service, "asgi": asgi_service}


def assert_unavailable(answer: tuple[int, dict[str, str], Any]) -> None:
    status, headers, body = answer
    assert status == 503, answer
    assert int(headers["retry-after"]) >= 1
    assert body["error"]["code"] == "verifier_unavailable"
    assert "Traceback" not in json.dumps(body) and CUSTOMER not in json.dumps(body)


def one_line_about(caplog: pytest.LogCaptureFixture, *words: str) -> str:
    [record] = [r for r in caplog.records if r.name == "keyledger_client.admission"]
    line = record.getMessage()
    assert all(word in line for word in words), line
    assert record.exc_info is None  # one line, not a traceback
    return line


@pytest.mark.parametrize("kind", sorted(SERVICES))
async def test_an_unreachable_keyledger_is_503_not_500(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nothing listens there
    async with (
        KeyledgerClient(f"http://127.0.0.1:{port}", "sk_live_service", retry=ONCE) as kl,
        SERVICES[kind](kl) as get,
    ):
        with caplog.at_level(logging.ERROR, "keyledger_client.admission"):
            assert_unavailable(await get({"Authorization": f"Bearer {CUSTOMER}"}))
    line = one_line_about(caplog, f"127.0.0.1:{port}", "ConnectError")
    assert "sk_live_service" not in line and CUSTOMER not in line


@pytest.mark.parametrize("kind", sorted(SERVICES))
async def test_a_service_key_without_keys_verify_is_503_not_500(
    kind: str, client: TestClient, admin_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with KeyledgerClient(base_url(client), admin_key) as admin:
        made = await admin.generate_key(
            "_system", name="reader", type="secret", scopes=["keys:read"]
        )
    assert made.secret
    async with (
        KeyledgerClient(base_url(client), made.secret, retry=ONCE) as kl,
        SERVICES[kind](kl) as get,
    ):
        with caplog.at_level(logging.ERROR, "keyledger_client.admission"):
            assert_unavailable(await get({"Authorization": f"Bearer {CUSTOMER}"}))
    line = one_line_about(caplog, "403", "insufficient_scope")
    assert made.secret not in line and CUSTOMER not in line


@pytest.mark.parametrize("kind", sorted(SERVICES))
async def test_no_bearer_key_is_challenged(kind: str, client: TestClient, admin_key: str) -> None:
    async with KeyledgerClient(base_url(client), admin_key) as kl, SERVICES[kind](kl) as get:
        status, headers, body = await get({})
        assert (status, body["error"]["code"]) == (401, "MALFORMED")
        assert headers["www-authenticate"] == "Bearer"
        # A key that was presented and refused is no missing credential: no challenge.
        status, headers, _ = await get({"Authorization": "Bearer sk_live_nope"})
        assert status == 401 and "www-authenticate" not in headers
