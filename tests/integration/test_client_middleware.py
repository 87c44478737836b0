"""The example services (examples/aiohttp_protected.py, examples/fastapi_protected.py under
uvicorn), each started as its own process, protect their routes with keys verified by a
LocalVerifier against a real keyledger, PostgreSQL and NATS: the same answers from both.
And KeyledgerAuth with a bare KeyledgerClient asks keyledger on every request."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from keyledger_client import KeyledgerClient
from keyledger_client.asgi import KeyledgerAuth, Receive, Scope, Send, verified_key
from service.settings import Settings
from tests.support.api import new_org
from tests.support.client_env import client_environment
from tests.support.example_service import EXAMPLES, call, example_service
from tests.support.outbox import eventually
from tests.support.poison import IsolatedApp


@pytest.fixture(scope="module")
async def keyledger(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> AsyncIterator[tuple[IsolatedApp, dict[str, str]]]:
    async with client_environment(postgres_server_url, settings, nats_url) as (app, env):
        yield app, env


@pytest.fixture(scope="module", params=sorted(EXAMPLES))
async def service(
    request: pytest.FixtureRequest, keyledger: tuple[IsolatedApp, dict[str, str]]
) -> AsyncIterator[tuple[IsolatedApp, str]]:
    app, env = keyledger
    async with example_service(sys.executable, EXAMPLES[request.param], env) as url:
        yield app, url


def keyledger_url(app: IsolatedApp) -> str:
    return str(app.client.make_url("")).rstrip("/")


async def test_the_example_service_lets_only_good_keys_through(
    service: tuple[IsolatedApp, str],
) -> None:
    app, url = service
    org = new_org()
    async with KeyledgerClient(keyledger_url(app), app.admin_key) as kl:
        good = await kl.generate_key(org, name="reader", type="secret", scopes=["orders:read"])
        weak = await kl.generate_key(org, name="writer", type="secret", scopes=["orders:write"])
        test = await kl.generate_key(
            org, name="tester", type="secret", scopes=["orders:read"], environment="test"
        )
        assert good.secret and weak.secret and test.secret

        status, body, _ = await call(f"{url}/orders", good.secret)
        assert (status, body) == (200, {"orders": [], "key_id": good.key.id, "org_id": org})
        assert (await call(f"{url}/orders", good.secret))[0] == 200  # now from its cache

        status, body, _ = await call(f"{url}/orders", weak.secret)
        assert (status, body["error"]["code"]) == (403, "INSUFFICIENT_SCOPE")
        # The example runs live (ORDERS_ENVIRONMENT unset): a test key never gets in.
        status, body, _ = await call(f"{url}/orders", test.secret)
        assert (status, body["error"]["code"]) == (403, "WRONG_ENVIRONMENT")
        status, body, _ = await call(f"{url}/orders", None)
        assert (status, body["error"]["code"]) == (401, "MALFORMED")
        status, body, _ = await call(f"{url}/orders", "sk_live_nope")
        assert (status, body["error"]["code"]) == (401, "MALFORMED")
        status, body, _ = await call(f"{url}/orders", good.secret, Origin="https://evil.example")
        assert (status, body["error"]["code"]) == (403, "ORIGIN_NOT_ALLOWED")
        assert (await call(f"{url}/healthz", None))[0] == 200  # exempt

        await kl.revoke_key(org, good.key.id, "compromised")

        async def refused() -> bool:
            status, body, _ = await call(f"{url}/orders", good.secret)
            return status == 401 and body["error"]["code"] == "REVOKED"

        await eventually(refused, within=10.0, what="the revocation at the example service")
        status, body, headers = await call(f"{url}/orders", good.secret)
        assert body == {"error": {"code": "REVOKED", "message": "the API key was refused"}}
        assert headers["Content-Type"] == "application/json; charset=utf-8"


async def caller_app(scope: Scope, receive: Receive, send: Send) -> None:
    """A raw ASGI app answering the id of the key KeyledgerAuth let through."""
    key = verified_key(scope)
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": key.id.encode()})


async def test_keyledger_auth_with_a_bare_client_asks_keyledger(
    keyledger: tuple[IsolatedApp, dict[str, str]],
) -> None:
    app, _ = keyledger
    org = new_org()
    async with KeyledgerClient(keyledger_url(app), app.admin_key) as kl:
        made = await kl.generate_key(org, name="reader", type="secret", scopes=["orders:read"])
        protected = KeyledgerAuth(caller_app, kl, scopes=["orders:read"])
        transport = httpx.ASGITransport(app=protected)
        async with httpx.AsyncClient(transport=transport, base_url="http://service") as http:

            async def get() -> tuple[int, Any]:
                response = await http.get("/", headers={"Authorization": f"Bearer {made.secret}"})
                return response.status_code, response.text

            assert await get() == (200, made.key.id)
            await kl.revoke_key(org, made.key.id, "compromised")

            async def refused() -> bool:
                status, text = await get()
                return status == 401 and '"REVOKED"' in text

            # As soon as keyledger's own index has it: nothing cached on the way.
            await eventually(refused, within=10.0, what="the revocation through the client")
