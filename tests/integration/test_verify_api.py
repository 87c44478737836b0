"""POST /v1/verify and GET /v1/authorize over HTTP, against real PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.domain import key_material
from service.http.context import KEYLEDGER
from service.verification.signing import sign, signing_payload
from tests.support.api import Api, new_org


async def verify(api: Api, **body: Any) -> dict[str, Any]:
    status, _, payload = await api.post("/v1/verify", body)
    assert status == 200, payload
    return payload


async def code_of(api: Api, **body: Any) -> str:
    return (await verify(api, **body))["code"]


async def test_bearer_key_lifecycle(api: Api) -> None:
    org = new_org()
    created = await api.generate(org, scopes=["orders:*"], metadata={"plan": "pro"})
    secret, key = created["secret"], created["key"]
    answer = await verify(api, key=secret, min_position=created["position"])
    assert answer == {
        "valid": True,
        "code": "VALID",
        "http_status": 200,
        "key": {
            "id": key["id"],
            "org_id": org,
            "name": "Test key",
            "type": "secret",
            "environment": "live",
            "scopes": ["orders:*"],
            "metadata": {"plan": "pro"},
            "expires_at": None,
            "identity_id": None,
        },
    }
    assert "hash" not in str(answer) and secret not in str(answer)

    path = f"/v1/orgs/{org}/keys/{key['id']}"
    _, _, disabled = await api.post(f"{path}/disable", {})
    assert await code_of(api, key=secret, min_position=disabled["position"]) == "DISABLED"
    _, _, enabled = await api.post(f"{path}/enable")
    assert await code_of(api, key=secret, min_position=enabled["position"]) == "VALID"
    _, _, revoked = await api.post(f"{path}/revoke", {"reason": "leaked"})
    answer = await verify(api, key=secret, min_position=revoked["position"])
    assert (answer["code"], answer["http_status"], answer["key"]["id"]) == (
        "REVOKED",
        401,
        key["id"],
    )


async def test_codes_for_requirements(api: Api) -> None:
    org = new_org()
    created = await api.generate(org, scopes=["orders:*", "prices:read"], environment="test")
    secret, at = created["secret"], created["position"]
    assert await code_of(api, key=secret, min_position=at, scopes=["orders:create"]) == "VALID"
    assert await code_of(api, key=secret, scopes=["prices:write"]) == "INSUFFICIENT_SCOPE"
    assert await code_of(api, key=secret, environment="live") == "WRONG_ENVIRONMENT"
    assert await code_of(api, key=secret, origin="https://evil.example") == "ORIGIN_NOT_ALLOWED"
    typo = secret[:-1] + ("1" if secret[-1] == "0" else "0")
    assert await code_of(api, key=typo) == "MALFORMED"
    assert await code_of(api, key="sk_live_" + "A" * 49) == "MALFORMED"
    assert await code_of(api, key="x" * 20_000) == "MALFORMED"
    assert await code_of(api, key=key_material.new_secret("secret", "test")) == "NOT_FOUND"


async def test_embed_keys(api: Api) -> None:
    org = new_org()
    created = await api.generate(
        org,
        type="embed",
        allowed_origins=["https://app.example.com"],
        resource="tmpl_42",
        scopes=["templates:read"],
    )
    secret, at = created["secret"], created["position"]
    origin = "https://app.example.com"
    assert await code_of(api, key=secret, min_position=at, origin=origin, resource="tmpl_42") == (
        "VALID"
    )
    assert await code_of(api, key=secret, resource="tmpl_42") == "ORIGIN_NOT_ALLOWED"
    assert await code_of(api, key=secret, origin="https://app.example.co", resource="tmpl_42") == (
        "ORIGIN_NOT_ALLOWED"
    )
    assert await code_of(api, key=secret, origin=origin) == "RESOURCE_NOT_ALLOWED"
    assert await code_of(api, key=secret, origin=origin, resource="tmpl_43") == (
        "RESOURCE_NOT_ALLOWED"
    )


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa-2048"])
async def test_signing_keys(api: Api, algorithm: str) -> None:
    org = new_org()
    created = await api.generate(org, type="signing", algorithm=algorithm)
    key_id, private_pem = created["key"]["id"], created["private_key"]
    body = '{"symbol": "OIL-BTC", "side": "buy", "qty": 12}'
    signature = sign(private_pem, b"POST:/api/v1/orders:qty=12&side=buy&symbol=OIL-BTC")
    request = {"key_id": key_id, "method": "POST", "path": "/api/v1/orders", "body": body}
    answer = await verify(api, **request, signature=signature, min_position=created["position"])
    assert (answer["code"], answer["key"]["type"]) == ("VALID", "signing")
    assert await code_of(api, **request | {"path": "/api/v1/orders?x"}, signature=signature) == (
        "NOT_FOUND"
    )
    assert await code_of(api, **request, signature="%%%not-base64%%%") == "MALFORMED"
    stamp = str(int(datetime.now(UTC).timestamp()))
    stamped = sign(private_pem, signing_payload("GET", "/p?q=1", None, stamp))
    signed_get = {"key_id": key_id, "method": "GET", "path": "/p?q=1", "signature": stamped}
    assert await code_of(api, **signed_get, timestamp=stamp) == "VALID"
    assert await code_of(api, **signed_get, timestamp=int(stamp)) == "VALID"
    assert await code_of(api, **signed_get) == "NOT_FOUND"
    old = str(int(stamp) - 400)
    stale = sign(private_pem, signing_payload("GET", "/p?q=1", None, old))
    assert await code_of(api, **signed_get | {"signature": stale}, timestamp=old) == "NOT_FOUND"


async def test_rotation_grace_and_expiry(api: Api) -> None:
    org = new_org()
    created = await api.generate(org)
    old = created["secret"]
    path = f"/v1/orgs/{org}/keys/{created['key']['id']}"
    _, _, rotated = await api.post(f"{path}/rotate", {"grace_period": "1h"})
    at = rotated["position"]
    assert await code_of(api, key=old, min_position=at) == "VALID"
    assert await code_of(api, key=rotated["secret"], min_position=at) == "VALID"
    _, _, again = await api.post(f"{path}/rotate", {"grace_period": "0s"})
    at = again["position"]
    assert await code_of(api, key=rotated["secret"], min_position=at) == "REVOKED"
    assert await code_of(api, key=again["secret"], min_position=at) == "VALID"

    expires_at = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    expiring = await api.generate(org, expires_at=expires_at)
    secret = expiring["secret"]
    assert await code_of(api, key=secret, min_position=expiring["position"]) == "VALID"
    await asyncio.sleep(1.1)
    assert await code_of(api, key=secret) == "EXPIRED"


async def test_rate_limited_with_retry_after(api: Api) -> None:
    created = await api.generate(new_org(), rate_limit={"limit": 2, "window": "1h"})
    secret = created["secret"]
    assert await code_of(api, key=secret, min_position=created["position"]) == "VALID"
    assert await code_of(api, key=secret) == "VALID"
    answer = await verify(api, key=secret)
    assert (answer["code"], answer["http_status"], answer["valid"]) == ("RATE_LIMITED", 429, False)
    assert 1 <= answer["retry_after"] <= 3600


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"origin": "https://x"},
        {"key": None},
        {"key": 12345},
        {"key": "sk_live_x", "key_id": "key_x"},
        {"key": "sk_live_x", "scopes": "orders:read"},
        {"key": "sk_live_x", "scopes": [1]},
        {"key": "sk_live_x", "scopes": ["Bad Scope"]},
        {"key": "sk_live_x", "environment": "prod"},
        {"key": "sk_live_x", "min_position": -1},
        {"key": "sk_live_x", "signature": "abc"},
        {"key_id": "key_x", "signature": "abc"},
        {
            "key_id": "key_x",
            "signature": "a",
            "method": "GET",
            "path": "/",
            "algorithm": "rsa-4096",
        },
        {"key_id": "key_x", "signature": "a", "method": "GET", "path": "/", "timestamp": 1.5},
        [1, 2],
        "sk_live_x",
    ],
)
async def test_bad_input_is_422(api: Api, body: Any) -> None:
    status, _, payload = await api.post("/v1/verify", body)
    assert (status, payload["error"]["code"]) == (422, "validation_error"), payload


async def test_beyond_the_head_is_not_caught_up(api: Api) -> None:
    status, _, payload = await api.post("/v1/verify", {"key": "sk_live_x", "min_position": 10**12})
    assert (status, payload["error"]["code"]) == (503, "not_caught_up")


async def test_verify_needs_the_scope(api: Api) -> None:
    _, _, reader = await api.post(
        "/v1/orgs/_system/keys", {"name": "reader", "type": "secret", "scopes": ["keys:read"]}
    )
    as_reader = Api(api.client, reader["secret"])
    status, _, payload = await as_reader.post("/v1/verify", {"key": "sk_live_x"})
    assert (status, payload["error"]["code"]) == (403, "insufficient_scope")


async def test_org_restricted_callers_see_only_their_orgs(api: Api) -> None:
    mine, theirs = new_org(), new_org()
    _, _, verifier = await api.post(
        "/v1/orgs/_system/keys",
        {"name": "v", "type": "secret", "scopes": ["keys:verify"], "metadata": {"orgs": [mine]}},
    )
    restricted = Api(api.client, verifier["secret"])
    own = await api.generate(mine)
    foreign = await api.generate(theirs)
    at = foreign["position"]
    assert await code_of(restricted, key=own["secret"], min_position=at) == "VALID"
    assert await code_of(restricted, key=foreign["secret"], min_position=at) == "NOT_FOUND"


async def test_caller_rate_limit_is_429_with_retry_after(api: Api) -> None:
    _, _, limited = await api.post(
        "/v1/orgs/_system/keys",
        {
            "name": "limited",
            "type": "secret",
            "scopes": ["keys:verify"],
            "rate_limit": {"limit": 1, "window": "1h"},
        },
    )
    caller = Api(api.client, limited["secret"])
    status, _, _ = await caller.post("/v1/verify", {"key": "sk_live_x"})
    assert status == 200  # authenticated at once (read-your-writes)
    status, headers, payload = await caller.post("/v1/verify", {"key": "sk_live_x"})
    assert (status, payload["error"]["code"]) == (429, "rate_limited")
    assert 1 <= int(headers["Retry-After"]) <= 3600


async def test_caller_errors_keep_their_codes(api: Api, client: TestClient) -> None:
    response = await client.post("/v1/verify", json={"key": "sk_live_x"})
    assert (response.status, (await response.json())["error"]["code"]) == (401, "unauthenticated")
    bad = Api(client, "sk_live_" + "0" * 49)
    status, _, payload = await bad.post("/v1/verify", {"key": "sk_live_x"})
    assert (status, payload["error"]["code"]) == (401, "invalid_api_key")
    _, _, revoked = await api.post(
        "/v1/orgs/_system/keys", {"name": "gone", "type": "secret", "scopes": ["keys:verify"]}
    )
    await api.post(f"/v1/orgs/_system/keys/{revoked['key']['id']}/revoke", {"reason": "unused"})
    gone = Api(client, revoked["secret"])
    for _ in range(50):  # until this replica's index has the revocation
        status, _, payload = await gone.post("/v1/verify", {"key": "sk_live_x"})
        if status == 401:
            break
        await asyncio.sleep(0.02)
    assert (status, payload["error"]["code"]) == (401, "api_key_inactive")


async def test_authorize_for_reverse_proxies(api: Api, client: TestClient) -> None:
    org = new_org()
    created = await api.generate(org, scopes=["orders:*"])
    assert await client.app[KEYLEDGER].verifier.feed.wait_for(created["position"], 5.0)
    proxy = {"X-Keyledger-Service-Key": api.service_key}
    response = await client.get(
        "/v1/authorize?scopes=orders:read&environment=live",
        headers=proxy | {"Authorization": f"Bearer {created['secret']}"},
    )
    assert response.status == 200
    assert response.headers["X-Keyledger-Key-Id"] == created["key"]["id"]
    assert response.headers["X-Keyledger-Org-Id"] == org
    assert response.headers["X-Keyledger-Scopes"] == "orders:*"
    assert (await response.json())["code"] == "VALID"

    response = await client.get(
        "/v1/authorize?scopes=admin:all",
        headers=proxy | {"Authorization": f"Bearer {created['secret']}"},
    )
    assert (response.status, (await response.json())["code"]) == (403, "INSUFFICIENT_SCOPE")
    assert "X-Keyledger-Key-Id" not in response.headers

    response = await client.get("/v1/authorize", headers=proxy)
    assert (response.status, (await response.json())["code"]) == (401, "MALFORMED")

    response = await client.get("/v1/authorize?environment=prod", headers=proxy)
    assert (response.status, (await response.json())["error"]["code"]) == (422, "validation_error")

    response = await client.get(
        "/v1/authorize", headers={"Authorization": f"Bearer {created['secret']}"}
    )
    assert (response.status, (await response.json())["error"]["code"]) == (401, "unauthenticated")


@pytest.mark.parametrize(
    "query",
    [
        "scopes=orders:read&scopes=nope",
        "environment=live&environment=test",
        "resource=a&resource=b",
        "cost=1&cost=2",
        "min_position=1&min_position=2",
    ],
)
async def test_authorize_refuses_a_parameter_it_uses_given_twice(
    api: Api, client: TestClient, query: str
) -> None:
    # First-wins would let a proxy that appends its parameters to the client's query
    # (?$args&scopes=…) be overruled by the client's own.
    org = new_org()
    created = await api.generate(org, scopes=["orders:*"])
    headers = {
        "X-Keyledger-Service-Key": api.service_key,
        "Authorization": f"Bearer {created['secret']}",
    }
    response = await client.get(f"/v1/authorize?{query}&unused=1&unused=2", headers=headers)
    error = (await response.json())["error"]
    assert (response.status, error["code"]) == (422, "validation_error")
    assert error["details"][0]["loc"] == ["query", query.partition("=")[0]]


async def test_verify_takes_no_query_parameters(api: Api) -> None:
    created = await api.generate(new_org())
    status, _, payload = await api.post("/v1/verify?environment=test", {"key": created["secret"]})
    assert (status, payload["error"]["code"]) == (422, "validation_error")
    assert payload["error"]["details"][0]["loc"] == ["query", "environment"]


async def test_authorize_signed_requests(api: Api, client: TestClient) -> None:
    created = await api.generate(new_org(), type="signing")
    key_id = created["key"]["id"]
    assert await client.app[KEYLEDGER].verifier.feed.wait_for(created["position"], 5.0)
    signature = sign(created["private_key"], b"DELETE:/orders/7?force=1")
    headers = {
        "X-Keyledger-Service-Key": api.service_key,
        "X-API-Key": key_id,
        "X-API-Signature": signature,
        "X-Forwarded-Method": "DELETE",
        "X-Forwarded-Uri": "/orders/7?force=1",
    }
    response = await client.get("/v1/authorize", headers=headers)
    assert (response.status, response.headers.get("X-Keyledger-Key-Id")) == (200, key_id)
    response = await client.get("/v1/authorize", headers=headers | {"X-Forwarded-Method": "GET"})
    assert (response.status, (await response.json())["code"]) == (401, "NOT_FOUND")


async def test_last_used_at_reaches_the_key(api: Api, client: TestClient) -> None:
    org = new_org()
    created = await api.generate(org)
    key_id = created["key"]["id"]
    status, _, _ = await api.get(f"/v1/orgs/{org}/keys/{key_id}?min_position={created['position']}")
    assert status == 200
    await verify(api, key=created["secret"], min_position=created["position"])
    assert await client.app[KEYLEDGER].verifier.usage.flush() >= 1
    _, _, shown = await api.get(f"/v1/orgs/{org}/keys/{key_id}")
    used = datetime.fromisoformat(shown["last_used_at"].replace("Z", "+00:00"))
    assert used.second == 0 and used.microsecond == 0
    assert datetime.now(UTC) - used < timedelta(minutes=2)


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "malformed_json"),
        (b'{"key": NaN}', "application/json", 400, "malformed_json"),
        (b'{"key": "x", "min_position": Infinity}', "application/json", 400, "malformed_json"),
        (b"\xff\xfe", "application/json", 400, "malformed_json"),
        (b'{"key": "x"}', "text/plain", 415, "unsupported_media_type"),
        (b"[1, 2]", "application/json", 422, "validation_error"),
        (b"   ", "application/json", 422, "validation_error"),
        (b'{"key": 5}', "application/json", 422, "validation_error"),
        (b'{"key": "x", "scopes": "a:read"}', "application/json", 422, "validation_error"),
        (b'{"key": "x", "signature": "c2ln"}', "application/json", 422, "validation_error"),
        (b'{"key": "x", "extra": 1}', "application/json", 422, "validation_error"),
    ],
)
async def test_bad_verify_bodies_keep_their_codes(
    api: Api, client: TestClient, data: bytes, content_type: str, status: int, code: str
) -> None:
    # The body is validated from the raw bytes in one pass; every refusal must
    # still be the one the two-step path (json.loads, then the model) gives.
    headers = {**api.headers(), "Content-Type": content_type}
    response = await client.post("/v1/verify", data=data, headers=headers)
    body = await response.json()
    assert (response.status, body["error"]["code"]) == (status, code)
    if code == "validation_error":
        details = body["error"]["details"]
        assert details and all(set(d) == {"loc", "msg", "type"} for d in details)


async def test_verify_answers_are_json_as_before(api: Api, client: TestClient) -> None:
    created = await api.generate(new_org(), scopes=["a:*"])
    body = {"key": created["secret"], "min_position": created["position"]}
    for _ in range(2):  # the second answer comes from the encoded-verdict cache
        response = await client.post("/v1/verify", json=body, headers=api.headers())
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert (await response.json())["key"]["id"] == created["key"]["id"]
    _, _, revoked = await api.post(
        f"/v1/orgs/{created['key']['org_id']}/keys/{created['key']['id']}/revoke",
        {"reason": "leaked"},
    )
    answer = await verify(api, key=created["secret"], min_position=revoked["position"])
    assert answer["code"] == "REVOKED"


@pytest.mark.parametrize(
    ("headers", "code", "named"),
    [
        ({}, "unauthenticated", "X-Keyledger-Service-Key: sk_"),
        # A Bearer header is not where /v1/authorize reads the service key.
        ({"Authorization": "Bearer sk_live_x"}, "unauthenticated", "X-Keyledger-Service-Key"),
        ({"X-Keyledger-Service-Key": "sk_live_\u00e9"}, "invalid_api_key", "X-Keyledger"),
    ],
)
async def test_authorize_names_its_own_service_key_header(
    client: TestClient, headers: dict[str, str], code: str, named: str
) -> None:
    response = await client.get("/v1/authorize", headers=headers)
    body = await response.json()
    assert response.status == 401 and body["error"]["code"] == code
    assert named in body["error"]["message"] and "Bearer" not in body["error"]["message"]


async def test_other_routes_still_ask_for_a_bearer_key(client: TestClient) -> None:
    response = await client.get("/v1/orgs/acme/keys")
    body = await response.json()
    assert response.status == 401 and "Authorization: Bearer" in body["error"]["message"]


@pytest.mark.parametrize(
    "raw",
    [
        b'{"key": "\x80"}',
        b'{"key": "\xed\xa0\x80"}',
        b'{"key": "a"}\xff',
        b'\xef\xbb\xbf{"key": "a"}',
    ],
)
async def test_a_body_that_is_not_utf8_json_is_400_not_500(
    api: Api, client: TestClient, raw: bytes
) -> None:
    response = await client.post(
        "/v1/verify", data=raw, headers={**api.headers(), "Content-Type": "application/json"}
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "malformed_json"
    assert response.headers["X-Request-Id"].startswith("req_")


async def test_a_verify_answer_keeps_the_connection_and_its_headers(
    api: Api, client: TestClient
) -> None:
    created = await api.generate(new_org())
    for _ in range(3):  # one connection, several answers: keep-alive holds
        response = await client.post(
            "/v1/verify",
            json={"key": created["secret"]},
            headers={**api.headers(), "X-Request-Id": "trace-keepalive"},
        )
        assert response.status == 200
        assert response.headers["Content-Type"] == "application/json; charset=utf-8"
        assert response.headers["X-Request-Id"] == "trace-keepalive"
        assert int(response.headers["Content-Length"]) == len(await response.read())
        assert (await response.json())["code"] == "VALID"
    head = await client.head(
        "/v1/authorize",
        headers={"X-Keyledger-Service-Key": api.service_key, "Authorization": "Bearer x"},
    )
    assert head.status == 401 and await head.read() == b""
