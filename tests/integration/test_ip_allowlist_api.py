"""allowed_cidrs over HTTP: ``ip`` on verify, the proxied client's address on authorize."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from service.settings import Settings
from tests.support.api import Api, new_org
from tests.support.replicas import in_process_replica


async def code_of(api: Api, **body: Any) -> str:
    status, _, payload = await api.post("/v1/verify", body)
    assert status == 200, payload
    return str(payload["code"])


async def authorize(client: TestClient, service_key: str, secret: str, **headers: str) -> int:
    response = await client.get(
        "/v1/authorize",
        headers={"X-Keyledger-Service-Key": service_key, "Authorization": f"Bearer {secret}"}
        | headers,
    )
    body = await response.json()
    assert response.status == body["http_status"]
    return response.status if body["code"] != "IP_NOT_ALLOWED" else -403


async def test_verify_takes_ip(api: Api) -> None:
    org = new_org()
    created = await api.generate(org, allowed_cidrs=["10.0.0.0/8", "2001:db8::/32"])
    secret = created["secret"]
    assert created["key"]["allowed_cidrs"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert await code_of(api, key=secret, ip="10.20.30.40") == "VALID"
    assert await code_of(api, key=secret, ip="2001:db8::7") == "VALID"
    assert await code_of(api, key=secret, ip="192.0.2.1") == "IP_NOT_ALLOWED"
    assert await code_of(api, key=secret) == "IP_NOT_ALLOWED"
    status, _, answer = await api.post("/v1/verify", {"key": secret, "ip": "10.0.0.0/8"})
    assert (status, answer["error"]["code"]) == (422, "validation_error")
    # A key without an allowlist takes any address, or none.
    plain = (await api.generate(org))["secret"]
    assert await code_of(api, key=plain, ip="192.0.2.1") == "VALID"
    # Changing the allowlist takes effect at once.
    status, _, _ = await api.patch(
        f"/v1/orgs/{org}/keys/{created['key']['id']}", {"allowed_cidrs": ["192.0.2.0/24"]}
    )
    assert status == 200
    assert await code_of(api, key=secret, ip="192.0.2.1") == "VALID"
    assert await code_of(api, key=secret, ip="10.20.30.40") == "IP_NOT_ALLOWED"


async def test_authorize_believes_forwarded_addresses_from_trusted_proxies_only(
    api: Api, client: TestClient, settings: Settings
) -> None:
    org = new_org()
    secret = (await api.generate(org, allowed_cidrs=["10.0.0.0/8"]))["secret"]
    key = api.service_key
    # The test client connects from 127.0.0.1, which this app does not trust: its claims
    # are ignored and its own address is the client's.
    assert await authorize(client, key, secret, **{"X-Forwarded-For": "10.0.0.1"}) == -403
    async with in_process_replica(settings, trusted_proxies="127.0.0.1/32") as behind_proxy:
        await Api(behind_proxy, key).get(f"/v1/orgs/{org}/keys")  # caught up enough to answer
        forwarded = {"X-Forwarded-For": "203.0.113.5, 10.0.0.1"}
        assert await authorize(behind_proxy, key, secret, **forwarded) == 200
        assert await authorize(behind_proxy, key, secret, **{"X-Real-IP": "10.1.1.1"}) == 200
        spoofed = {"X-Forwarded-For": "10.0.0.1, 203.0.113.5"}  # the proxy saw 203.0.113.5
        assert await authorize(behind_proxy, key, secret, **spoofed) == -403
        assert await authorize(behind_proxy, key, secret, **{"X-Forwarded-For": "x"}) == -403
        assert await authorize(behind_proxy, key, secret) == -403  # the proxy's own address
