"""Service keys as callers: 401, 403 and 404 exactly as docs/api.md#authentication says."""

from __future__ import annotations

import asyncpg
from aiohttp.test_utils import TestClient

from service.domain import key_material
from service.settings import Settings
from tests.support.api import Api, new_org, service_key


async def test_missing_malformed_and_unknown_keys_are_401(client: TestClient) -> None:
    path = f"/v1/orgs/{new_org()}/keys"
    cases = {
        None: "unauthenticated",
        "Bearer ": "invalid_api_key",
        "Basic dXNlcjpwYXNz": "invalid_api_key",
        "Bearer sk_live_garbage": "invalid_api_key",
        f"Bearer {key_material.new_secret('secret', 'live')}": "invalid_api_key",
    }
    for header, code in cases.items():
        headers = {"Authorization": header} if header else {}
        response = await client.post(path, json={"name": "k", "type": "secret"}, headers=headers)
        assert response.status == 401, header
        assert (await response.json())["error"]["code"] == code


async def test_customer_keys_are_not_service_keys(api: Api, client: TestClient) -> None:
    customer = await api.generate(new_org())
    response = await client.get(
        f"/v1/orgs/{customer['key']['org_id']}/keys/{customer['key']['id']}",
        headers={"Authorization": f"Bearer {customer['secret']}"},
    )
    assert response.status == 401


async def test_revoked_service_key_is_401(
    api: Api, client: TestClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    secret = await service_key(client, settings, ["keys:write"])
    caller = Api(client, secret)
    await caller.generate(new_org())
    key_id = await pool.fetchval(
        "SELECT key_id FROM key_registry WHERE secret_hash = $1",
        key_material.secret_hash(settings.pepper_bytes, secret),
    )
    status, _, _ = await api.post(f"/v1/orgs/_system/keys/{key_id}/revoke", {"reason": "leaked"})
    assert status == 200
    status, _, body = await caller.post(
        f"/v1/orgs/{new_org()}/keys", {"name": "k", "type": "secret"}
    )
    assert (status, body["error"]["code"]) == (401, "api_key_inactive")


async def test_scopes_are_enforced(client: TestClient, pool: asyncpg.Pool, settings: Settings):
    reader = Api(client, await service_key(client, settings, ["keys:read"]))
    writer = Api(client, await service_key(client, settings, ["keys:write"]))
    org = new_org()
    status, _, body = await reader.post(f"/v1/orgs/{org}/keys", {"name": "k", "type": "secret"})
    assert (status, body["error"]["code"]) == (403, "insufficient_scope")
    created = await writer.generate(org)
    status, _, body = await writer.get(f"/v1/orgs/{org}/keys/{created['key']['id']}")
    assert (status, body["error"]["code"]) == (403, "insufficient_scope")
    status, _, _ = await reader.get(f"/v1/orgs/{org}/keys/{created['key']['id']}")
    assert status == 200


async def test_org_restricted_key_sees_only_its_orgs(
    client: TestClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    mine, theirs = new_org(), new_org()
    restricted = Api(client, await service_key(client, settings, ["keys:write"], orgs=[mine]))
    await restricted.generate(mine)
    status, _, body = await restricted.post(
        f"/v1/orgs/{theirs}/keys", {"name": "k", "type": "secret"}
    )
    assert (status, body["error"]["code"]) == (404, "org_not_found")


async def test_system_org_needs_admin(client: TestClient, pool: asyncpg.Pool, settings: Settings):
    writer = Api(client, await service_key(client, settings, ["keys:write", "keys:read"]))
    status, _, body = await writer.post("/v1/orgs/_system/keys", {"name": "k", "type": "secret"})
    assert (status, body["error"]["code"]) == (404, "org_not_found")


async def test_admin_manages_service_keys_over_http(api: Api, client: TestClient) -> None:
    created = await api.generate(
        "_system", name="ci", scopes=["keys:read"], metadata={"orgs": ["acme"]}
    )
    assert created["key"]["org_id"] == "_system"
    status, _, body = await api.post(
        "/v1/orgs/_system/keys",
        {"name": "x", "type": "embed", "resource": "r", "allowed_origins": ["https://a.b"]},
    )
    assert (status, body["error"]["code"]) == (422, "validation_error")
    status, _, body = await api.post(
        "/v1/orgs/_system/keys", {"name": "x", "type": "secret", "scopes": ["templates:read"]}
    )
    assert (status, body["error"]["code"]) == (422, "validation_error")
    status, _, body = await api.post(
        "/v1/orgs/_system/keys", {"name": "x", "type": "secret", "metadata": {"orgs": "acme"}}
    )
    assert (status, body["error"]["code"]) == (422, "validation_error")
    # New service key works at once, and the _system org has no active-key limit.
    for i in range(12):
        await api.generate("_system", name=f"svc{i}", scopes=["keys:read"])
    new = Api(client, created["secret"])
    status, _, body = await new.get(f"/v1/orgs/acme/keys/{created['key']['id']}")
    assert (status, body["error"]["code"]) == (404, "key_not_found")
