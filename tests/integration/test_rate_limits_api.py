"""Named rate limits over HTTP: ``cost``, ``ratelimits`` in the answer, RateLimit-* headers."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.api import Api, new_org

LIMITS = [
    {"name": "burst", "limit": 5, "window": "1h"},
    {"name": "daily", "limit": 7, "window": "1d"},
]


async def verify(api: Api, **body: Any) -> dict[str, Any]:
    status, _, payload = await api.post("/v1/verify", body)
    assert status == 200, payload
    return payload


async def test_named_limits_and_cost(api: Api) -> None:
    created = await api.generate(new_org(), rate_limits=LIMITS)
    assert created["key"]["rate_limits"] == LIMITS and created["key"]["rate_limit"] is None
    secret = created["secret"]
    answer = await verify(api, key=secret, cost=3)
    assert answer["code"] == "VALID"
    states = {s["name"]: s for s in answer["ratelimits"]}
    assert (states["burst"]["remaining"], states["daily"]["remaining"]) == (2, 4)
    assert states["burst"]["limit"] == 5
    assert datetime.fromisoformat(states["daily"]["reset_at"]) > datetime.fromisoformat(
        states["burst"]["reset_at"]
    )
    refused = await verify(api, key=secret, cost=3)  # burst has 2 left: counted in neither
    assert (refused["code"], refused["http_status"]) == ("RATE_LIMITED", 429)
    assert 1 <= refused["retry_after"] <= 3600
    assert [s["remaining"] for s in refused["ratelimits"]] == [2, 4]
    assert (await verify(api, key=secret, cost=0))["code"] == "VALID"  # a look, not a use
    assert [s["remaining"] for s in (await verify(api, key=secret, cost=2))["ratelimits"]] == [0, 2]
    # A plain key's answer has no ratelimits.
    plain = await api.generate(new_org())
    assert "ratelimits" not in await verify(api, key=plain["secret"])
    for cost in (-1, 1001, 1.5, "1", True):
        status, _, error = await api.post("/v1/verify", {"key": secret, "cost": cost})
        assert (status, error["error"]["code"]) == (422, "validation_error"), cost


async def test_a_limit_changed_by_patch_applies_at_once(api: Api) -> None:
    org = new_org()
    created = await api.generate(org, rate_limit={"limit": 1, "window": "1h"})
    secret, key_id = created["secret"], created["key"]["id"]
    assert created["key"]["rate_limits"] == [{"name": "default", "limit": 1, "window": "1h"}]
    assert (await verify(api, key=secret))["code"] == "VALID"
    assert (await verify(api, key=secret))["code"] == "RATE_LIMITED"
    status, _, _ = await api.patch(f"/v1/orgs/{org}/keys/{key_id}", {"rate_limits": []})
    assert status == 200
    answer = await verify(api, key=secret)
    assert answer["code"] == "VALID" and "ratelimits" not in answer


async def test_authorize_sends_ratelimit_headers(api: Api, client: TestClient) -> None:
    secret = (await api.generate(new_org(), rate_limits=LIMITS))["secret"]
    headers = {"X-Keyledger-Service-Key": api.service_key, "Authorization": f"Bearer {secret}"}
    response = await client.get("/v1/authorize?cost=4", headers=headers)
    assert response.status == 200
    assert response.headers["RateLimit-Limit"] == "5"
    assert response.headers["RateLimit-Remaining"] == "1"
    assert 0 < int(response.headers["RateLimit-Reset"]) <= 3600
    response = await client.get("/v1/authorize?cost=2", headers=headers)
    assert response.status == 429
    assert response.headers["RateLimit-Remaining"] == "1"
    assert int(response.headers["Retry-After"]) >= 1
    response = await client.get("/v1/authorize?cost=x", headers=headers)
    assert response.status == 422
