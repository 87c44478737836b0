"""Every key command over HTTP against a real PostgreSQL (docs/api.md#commands)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg
from aiohttp.test_utils import TestClient

from service.domain import key_material
from tests.support.api import Api, new_org


async def events_of(pool: asyncpg.Pool, key_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT event_type, stream_version, position, actor, data FROM events"
        " WHERE key_id = $1 ORDER BY stream_version",
        key_id,
    )


async def test_generate_secret_key_returns_the_secret_once(api: Api, pool: asyncpg.Pool) -> None:
    org = new_org()
    status, headers, body = await api.post(
        f"/v1/orgs/{org}/keys",
        {
            "name": "Trading Bot",
            "type": "secret",
            "scopes": ["orders:write", "templates:*"],
            "metadata": {"plan": "pro"},
            "rate_limit": {"limit": 5, "window": "1s"},
        },
    )
    assert status == 201
    key, secret = body["key"], body["secret"]
    assert key_material.is_well_formed(secret) and secret.startswith("sk_live_")
    assert key["hint"] == secret[:12] + "…" + secret[-4:]
    assert key["status"] == "active" and key["environment"] == "live" and key["version"] == 1
    assert key["scopes"] == ["orders:write", "templates:*"]
    assert key["expires_at"] is None and key["metadata"] == {"plan": "pro"}
    assert body["position"] >= 1 and headers["ETag"] == '"1"'
    [event] = await events_of(pool, key["id"])
    assert event["event_type"] == "KeyGenerated" and event["position"] == body["position"]
    assert secret not in event["data"]
    assert key_material.secret_hash(api_pepper(api), secret) in event["data"]

    status, _, fetched = await api.get(f"/v1/orgs/{org}/keys/{key['id']}")
    assert status == 200 and fetched == key


def api_pepper(api: Api) -> bytes:
    from service.http.context import SETTINGS

    return api.client.app[SETTINGS].pepper_bytes


async def test_generate_embed_and_signing_keys(api: Api) -> None:
    org = new_org()
    embed = await api.generate(
        org,
        type="embed",
        environment="test",
        allowed_origins=["https://App.example.com"],
        resource="tpl_1",
        expires_in="30d",
    )
    assert embed["secret"].startswith("rk_test_")
    assert embed["key"]["allowed_origins"] == ["https://app.example.com"]
    assert embed["key"]["resource"] == "tpl_1"
    expires = datetime.fromisoformat(embed["key"]["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(UTC) <= timedelta(days=30)

    for algorithm in ("ed25519", "rsa-2048"):
        signing = await api.generate(org, type="signing", algorithm=algorithm)
        assert "secret" not in signing
        assert signing["private_key"].startswith("-----BEGIN PRIVATE KEY-----")
        assert signing["key"]["public_key"].startswith("-----BEGIN PUBLIC KEY-----")
        assert signing["key"]["algorithm"] == algorithm and signing["key"]["hint"] is None
    default = await api.generate(org, type="signing")
    assert default["key"]["algorithm"] == "ed25519"


async def test_full_lifecycle_records_actor_and_reasons(api: Api, pool: asyncpg.Pool) -> None:
    org = new_org()
    key_id = (await api.generate(org))["key"]["id"]
    base = f"/v1/orgs/{org}/keys/{key_id}"
    who = {"X-On-Behalf-Of": "user:42", "X-Request-Id": "req-lifecycle-1"}

    status, headers, body = await api.post(f"{base}/rename", {"name": "Renamed"}, headers=who)
    assert status == 200 and body["key"]["name"] == "Renamed"
    assert headers["X-Request-Id"] == "req-lifecycle-1"
    status, _, body = await api.post(f"{base}/disable", {"reason": "abuse"})
    assert status == 200 and body["key"]["status"] == "disabled" and body["key"]["disabled_at"]
    status, _, body = await api.post(f"{base}/enable")
    assert status == 200 and body["key"]["status"] == "active"
    status, _, body = await api.post(f"{base}/rotate", {"grace_period": "1h"})
    assert status == 200 and key_material.is_well_formed(body["secret"])
    status, _, body = await api.post(f"{base}/revoke", {"reason": "compromised"})
    assert status == 200 and body["key"]["status"] == "revoked" and body["key"]["revoked_at"]

    rows = await events_of(pool, key_id)
    assert [r["event_type"] for r in rows] == [
        "KeyGenerated",
        "KeyRenamed",
        "KeyDisabled",
        "KeyEnabled",
        "KeyRotated",
        "KeyRevoked",
    ]
    assert [r["stream_version"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert body["position"] == rows[-1]["position"]
    assert '"on_behalf_of":"user:42"' in rows[1]["actor"]
    assert '"request_id":"req-lifecycle-1"' in rows[1]["actor"]
    assert '"reason":"abuse"' in rows[2]["data"] and '"reason":"compromised"' in rows[5]["data"]


async def test_no_op_commands_answer_200_and_write_nothing(api: Api, pool: asyncpg.Pool) -> None:
    org = new_org()
    created = await api.generate(org, name="Same")
    key_id = created["key"]["id"]
    base = f"/v1/orgs/{org}/keys/{key_id}"
    for path, body in [("rename", {"name": "Same"}), ("enable", None)]:
        status, _, answer = await api.post(f"{base}/{path}", body)
        assert status == 200 and answer["position"] == created["position"]
    await api.post(f"{base}/revoke", {"reason": "unused"})
    status, _, answer = await api.post(f"{base}/revoke", {"reason": "other"})
    assert status == 200 and answer["key"]["status"] == "revoked"
    assert len(await events_of(pool, key_id)) == 2


async def test_terminal_keys_refuse_everything_but_revoke(api: Api) -> None:
    org = new_org()
    key_id = (await api.generate(org))["key"]["id"]
    base = f"/v1/orgs/{org}/keys/{key_id}"
    await api.post(f"{base}/revoke", {"reason": "leaked"})
    for path, body in [
        ("rename", {"name": "x"}),
        ("disable", {}),
        ("enable", None),
        ("rotate", {}),
    ]:
        status, _, answer = await api.post(f"{base}/{path}", body)
        assert status == 409, path
        assert answer["error"]["code"] == "key_not_mutable"


async def test_expired_key_is_expired_at_once_and_then_recorded(
    api: Api, pool: asyncpg.Pool
) -> None:
    org = new_org()
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    key_id = (await api.generate(org, expires_at=soon))["key"]["id"]
    await asyncio.sleep(1.1)
    status, _, key = await api.get(f"/v1/orgs/{org}/keys/{key_id}")
    assert key["status"] == "expired"
    status, _, answer = await api.post(f"/v1/orgs/{org}/keys/{key_id}/rename", {"name": "x"})
    assert status == 409 and answer["error"]["code"] == "key_not_mutable"
    for _ in range(50):
        types = [r["event_type"] for r in await events_of(pool, key_id)]
        if "KeyExpired" in types:
            break
        await asyncio.sleep(0.1)
    assert types == ["KeyGenerated", "KeyExpired"]
    status, _, answer = await api.post(f"/v1/orgs/{org}/keys/{key_id}/revoke", {"reason": "leaked"})
    assert status == 200 and answer["key"]["status"] == "revoked"


async def test_active_key_limit_holds_under_concurrency(api: Api) -> None:
    org = new_org()
    results = await asyncio.gather(
        *(api.post(f"/v1/orgs/{org}/keys", {"name": f"k{i}", "type": "secret"}) for i in range(30))
    )
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [201] * 10 + [409] * 20
    codes = {body["error"]["code"] for status, _, body in results if status == 409}
    assert codes == {"active_key_limit"}
    # The limit is per environment: test keys still have room.
    await api.generate(org, environment="test")


async def test_enable_respects_the_limit(api: Api) -> None:
    org = new_org()
    keys = [(await api.generate(org, name=f"k{i}"))["key"]["id"] for i in range(10)]
    await api.post(f"/v1/orgs/{org}/keys/{keys[0]}/disable")
    await api.generate(org, name="replacement")
    status, _, body = await api.post(f"/v1/orgs/{org}/keys/{keys[0]}/enable")
    assert status == 409 and body["error"]["code"] == "active_key_limit"


async def test_if_match(api: Api) -> None:
    org = new_org()
    key_id = (await api.generate(org))["key"]["id"]
    base = f"/v1/orgs/{org}/keys/{key_id}"
    status, _, body = await api.post(f"{base}/rename", {"name": "a"}, headers={"If-Match": '"2"'})
    assert status == 412 and body["error"]["code"] == "version_mismatch"
    status, headers, _ = await api.post(
        f"{base}/rename", {"name": "a"}, headers={"If-Match": '"1"'}
    )
    assert status == 200 and headers["ETag"] == '"2"'
    status, _, body = await api.post(f"{base}/rename", {"name": "b"}, headers={"If-Match": "v2"})
    assert status == 400 and body["error"]["code"] == "invalid_header"


async def test_get_with_if_none_match(api: Api) -> None:
    org = new_org()
    key_id = (await api.generate(org))["key"]["id"]
    status, _, _ = await api.get(f"/v1/orgs/{org}/keys/{key_id}", headers={"If-None-Match": '"1"'})
    assert status == 304


async def test_idempotent_retries(api: Api, pool: asyncpg.Pool) -> None:
    org = new_org()
    headers = {"Idempotency-Key": f"create-{org}"}
    body = {"name": "Once", "type": "secret"}
    first = await api.post(f"/v1/orgs/{org}/keys", body, headers=headers)
    again = await api.post(f"/v1/orgs/{org}/keys", body, headers=headers)
    assert first[0] == again[0] == 201
    assert again[2]["key"] == first[2]["key"] and again[2]["position"] == first[2]["position"]
    assert again[2]["secret"] is None and again[2]["replayed"] is True
    assert first[2]["secret"] and "replayed" not in first[2]
    count = await pool.fetchval("SELECT count(*) FROM events WHERE org_id = $1", org)
    assert count == 1

    status, _, error = await api.post(
        f"/v1/orgs/{org}/keys", {"name": "Other", "type": "secret"}, headers=headers
    )
    assert status == 422 and error["error"]["code"] == "idempotency_key_reused"
    status, _, error = await api.post(
        f"/v1/orgs/{org}/keys", body, headers={"Idempotency-Key": "x" * 256}
    )
    assert status == 400 and error["error"]["code"] == "invalid_header"


async def test_concurrent_idempotent_retries_write_once(api: Api, pool: asyncpg.Pool) -> None:
    org = new_org()
    headers = {"Idempotency-Key": "burst"}
    results = await asyncio.gather(
        *(
            api.post(f"/v1/orgs/{org}/keys", {"name": "B", "type": "secret"}, headers=headers)
            for _ in range(8)
        )
    )
    assert {r[0] for r in results} == {201}
    assert len({r[2]["key"]["id"] for r in results}) == 1
    assert sum(1 for r in results if r[2]["secret"]) == 1
    assert await pool.fetchval("SELECT count(*) FROM events WHERE org_id = $1", org) == 1


async def test_request_id_is_generated_and_echoed(client: TestClient, api: Api) -> None:
    response = await client.get("/v1/orgs/acme/keys/key_x", headers=api.headers())
    assert response.headers["X-Request-Id"].startswith("req_")
    body = await response.json()
    assert body["error"]["request_id"] == response.headers["X-Request-Id"]
