"""A small client for the keyledger HTTP API in tests."""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from service.settings import Settings


async def indexed(client: TestClient, position: int) -> None:
    """Wait until the app's verification index has applied ``position``.

    A key written behind the app's back (``issue_service_key`` on a pool) reaches
    the index through its notification; until then the index refuses it.
    """
    from service.http.context import KEYLEDGER

    feed = client.app[KEYLEDGER].feed
    assert await feed.wait_for(position, 10.0), "index did not catch up"


async def service_key(
    client: TestClient, settings: Settings, scopes: list[str], orgs: list[str] | None = None
) -> str:
    """A new service key's secret, issued behind the app's back and known to its index."""
    from events.models import Actor
    from service.http.context import KEYLEDGER
    from service.service_keys import issue_service_key

    issued = await issue_service_key(
        client.app[KEYLEDGER].pool,
        settings.pepper_bytes,
        name="svc",
        scopes=scopes,
        orgs=orgs,
        actor=Actor(id="test"),
    )
    await indexed(client, issued.position)
    return issued.secret


def new_org() -> str:
    """A fresh org id, so tests sharing one database never collide."""
    return f"org-{uuid.uuid4().hex[:12]}"


class Api:
    """Calls the API as one service key."""

    def __init__(self, client: TestClient, service_key: str) -> None:
        self.client = client
        self.service_key = service_key

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.service_key}", **extra}

    async def post(
        self, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> tuple[int, CIMultiDict[str], Any]:
        response = await self.client.post(path, json=body, headers=self.headers(**(headers or {})))
        return response.status, CIMultiDict(response.headers), await response.json()

    async def patch(
        self, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> tuple[int, CIMultiDict[str], Any]:
        response = await self.client.patch(path, json=body, headers=self.headers(**(headers or {})))
        return response.status, CIMultiDict(response.headers), await response.json()

    async def put(
        self, path: str, body: Any = None, *, headers: dict[str, str] | None = None
    ) -> tuple[int, CIMultiDict[str], Any]:
        response = await self.client.put(path, json=body, headers=self.headers(**(headers or {})))
        return response.status, CIMultiDict(response.headers), await response.json()

    async def get(
        self, path: str, *, headers: dict[str, str] | None = None
    ) -> tuple[int, CIMultiDict[str], Any]:
        response = await self.client.get(path, headers=self.headers(**(headers or {})))
        payload = await response.json() if response.status != 304 else None
        return response.status, CIMultiDict(response.headers), payload

    async def generate(self, org: str, **body: Any) -> dict[str, Any]:
        body.setdefault("name", "Test key")
        body.setdefault("type", "secret")
        status, _, payload = await self.post(f"/v1/orgs/{org}/keys", body)
        assert status == 201, payload
        return payload
