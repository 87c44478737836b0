"""Real answers carry the response headers ``/openapi.json`` declares required for them."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from service.http.openapi import build_openapi
from tests.support.api import Api, new_org
from tests.support.declared_headers import declared_headers, missing_headers

KEY = "/v1/orgs/{org_id}/keys/{key_id}"
AUTHORIZE = "/v1/authorize"


async def test_get_key_sends_its_declared_headers_on_200_304_and_404(
    api: Api, client: TestClient
) -> None:
    document = build_openapi()
    org = new_org()
    key_id = (await api.generate(org, name="headers"))["key"]["id"]
    auth = {"Authorization": f"Bearer {api.service_key}"}
    answer = await client.get(f"/v1/orgs/{org}/keys/{key_id}", headers=auth)
    assert answer.status == 200
    assert {"ETag", "X-Request-Id"} <= set(declared_headers(document, KEY, "get", 200))
    assert missing_headers(document, KEY, "get", 200, answer.headers) == set()
    etag = answer.headers["ETag"]
    unchanged = await client.get(
        f"/v1/orgs/{org}/keys/{key_id}", headers={**auth, "If-None-Match": etag}
    )
    assert unchanged.status == 304
    assert missing_headers(document, KEY, "get", 304, unchanged.headers) == set()
    absent = "key_00000000000000000000000000"
    unknown = await client.get(f"/v1/orgs/{org}/keys/{absent}", headers=auth)
    assert unknown.status == 404, await unknown.text()
    assert missing_headers(document, KEY, "get", 404, unknown.headers) == set()


async def test_authorize_with_a_rate_limited_key_sends_every_declared_header(
    api: Api, client: TestClient
) -> None:
    document = build_openapi()
    limits = [{"name": "burst", "limit": 1, "window": "1h"}]
    secret = (await api.generate(new_org(), rate_limits=limits))["secret"]
    headers = {"X-Keyledger-Service-Key": api.service_key, "Authorization": f"Bearer {secret}"}
    allowed = await client.get(AUTHORIZE, headers=headers)
    assert allowed.status == 200
    # A key with limits gets the optional rate-limit headers as well as the required ones.
    sent = allowed.headers
    assert missing_headers(document, AUTHORIZE, "get", 200, sent, optional_too=True) == set()
    refused = await client.get(AUTHORIZE, headers=headers)
    assert refused.status == 429
    assert (await refused.json())["code"] == "RATE_LIMITED"
    declared = declared_headers(document, AUTHORIZE, "get", 429)
    assert {"Retry-After", "RateLimit-Remaining"} <= set(declared)
    sent = refused.headers
    assert missing_headers(document, AUTHORIZE, "get", 429, sent, optional_too=True) == set()


async def test_a_key_without_limits_is_not_promised_rate_limit_headers(
    api: Api, client: TestClient
) -> None:
    document = build_openapi()
    secret = (await api.generate(new_org()))["secret"]
    headers = {"X-Keyledger-Service-Key": api.service_key, "Authorization": f"Bearer {secret}"}
    allowed = await client.get(AUTHORIZE, headers=headers)
    assert allowed.status == 200
    assert "RateLimit-Limit" not in allowed.headers
    assert missing_headers(document, AUTHORIZE, "get", 200, allowed.headers) == set()
