"""examples/aiohttp_protected.py, started as its own process, protects its routes with keys
verified by a LocalVerifier against a real keyledger, PostgreSQL and NATS."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from keyledger_client import KeyledgerClient
from service.embedded import free_port
from service.settings import Settings
from tests.support.api import new_org
from tests.support.client_env import ROOT, client_environment
from tests.support.outbox import eventually
from tests.support.poison import IsolatedApp


@pytest.fixture(scope="module")
async def service(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> AsyncIterator[tuple[IsolatedApp, str]]:
    async with client_environment(postgres_server_url, settings, nats_url) as (app, env):
        port = free_port()
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            str(ROOT / "examples" / "aiohttp_protected.py"),
            "--port",
            str(port),
            env=env,
            cwd=ROOT,
            stderr=asyncio.subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:

                async def healthy() -> bool:
                    assert process.returncode is None, "the example exited"
                    try:
                        async with http.get(f"{url}/healthz") as response:
                            return response.status == 200
                    except aiohttp.ClientConnectionError:
                        return False

                await eventually(healthy, within=60.0, what="the example service")
            yield app, url
        finally:
            process.terminate()
            await process.wait()


async def call(url: str, secret: str | None, **headers: str) -> tuple[int, Any, dict[str, str]]:
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, await response.json(), dict(response.headers)


async def test_the_example_service_lets_only_good_keys_through(
    service: tuple[IsolatedApp, str],
) -> None:
    app, url = service
    org = new_org()
    async with KeyledgerClient(str(app.client.make_url("")).rstrip("/"), app.admin_key) as kl:
        good = await kl.generate_key(org, name="reader", type="secret", scopes=["orders:read"])
        weak = await kl.generate_key(org, name="writer", type="secret", scopes=["orders:write"])
        assert good.secret and weak.secret

        status, body, _ = await call(f"{url}/orders", good.secret)
        assert (status, body) == (200, {"orders": [], "key_id": good.key.id, "org_id": org})
        assert (await call(f"{url}/orders", good.secret))[0] == 200  # now from its cache

        status, body, _ = await call(f"{url}/orders", weak.secret)
        assert (status, body["error"]["code"]) == (403, "INSUFFICIENT_SCOPE")
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
