"""Headers and query strings a hostile stranger tried: duplicates, NULs, secret-shaped ids."""

from __future__ import annotations

from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from events.models import Actor
from service.domain import key_material
from service.http.context import KEYLEDGER, SETTINGS
from service.service_keys import issue_service_key
from tests.support.api import Api, indexed, new_org


async def test_a_secret_shaped_request_id_is_neither_echoed_nor_stored(
    api: Api, client: TestClient
) -> None:
    secret = key_material.new_secret("secret", "live")
    org = new_org()
    response = await client.post(
        f"/v1/orgs/{org}/keys",
        json={"name": "k", "type": "secret"},
        headers=api.headers(**{"X-Request-Id": secret}),
    )
    assert response.status == 201
    assert secret not in response.headers["X-Request-Id"]
    created = await response.json()
    status, _, history = await api.get(f"/v1/orgs/{org}/keys/{created['key']['id']}/events")
    assert status == 200 and secret not in str(history)
    missing = await client.get(
        f"/v1/orgs/{org}/keys/key_00000000000000000000000000",
        headers=api.headers(**{"X-Request-Id": secret}),
    )
    assert missing.status == 404
    assert secret not in await missing.text() and secret not in str(missing.headers)


async def test_a_secret_shaped_on_behalf_of_is_refused_and_writes_nothing(api: Api) -> None:
    org = new_org()
    for shaped in (
        key_material.new_secret("secret", "live"),
        "user:" + key_material.new_secret("embed", "test"),
    ):
        status, _, body = await api.post(
            f"/v1/orgs/{org}/keys",
            {"name": "k", "type": "secret"},
            headers={"X-On-Behalf-Of": shaped},
        )
        assert status == 400 and body["error"]["code"] == "invalid_header"
        assert shaped not in str(body)
    status, _, listed = await api.get(f"/v1/orgs/{org}/keys")
    assert status == 200 and listed["data"] == []


async def test_query_values_with_control_characters_are_refused(api: Api) -> None:
    for query in (
        "since=2099-01-01T00:00:00Z%00garbage",
        "until=2099-01-01T00:00:00Z%0A",
        "event_type=KeyRevoked%00",
        "limit=5%00",
        "org_id=acme%1B",
    ):
        status, _, body = await api.get(f"/v1/audit?{query}")
        assert status == 422, (query, body)


async def test_two_credentials_are_refused_not_picked(api: Api, client: TestClient) -> None:
    other = await issue_service_key(
        client.app[KEYLEDGER].pool,
        client.app[SETTINGS].pepper_bytes,
        name="limited",
        scopes=["admin"],
        orgs=["someone"],
        actor=Actor(id="test"),
    )
    await indexed(client, other.position)
    for first, second in ((api.service_key, other.secret), (other.secret, api.service_key)):
        headers = CIMultiDict(
            [("Authorization", f"Bearer {first}"), ("Authorization", f"Bearer {second}")]
        )
        response = await client.get("/v1/orgs/_system/keys", headers=headers)
        assert response.status == 400
        assert (await response.json())["error"]["code"] == "invalid_header"

    customer = await api.generate(new_org())
    forwarded = CIMultiDict(
        [
            ("X-Keyledger-Service-Key", api.service_key),
            ("Authorization", f"Bearer {customer['secret']}"),
            ("Authorization", f"Bearer {customer['secret']}"),
        ]
    )
    response = await client.get("/v1/authorize", headers=forwarded)
    assert response.status == 401
    assert (await response.json())["code"] == "MALFORMED"


async def test_walking_the_whole_log_needs_an_unlimited_audit_key(
    api: Api, client: TestClient
) -> None:
    limited = await issue_service_key(
        client.app[KEYLEDGER].pool,
        client.app[SETTINGS].pepper_bytes,
        name="auditor of one org",
        scopes=["audit:read"],
        orgs=[new_org()],
        actor=Actor(id="test"),
    )
    await indexed(client, limited.position)
    status, _, body = await Api(client, limited.secret).get("/v1/audit/verify")
    assert status == 403 and body["error"]["code"] == "insufficient_scope"
    status, _, report = await api.get("/v1/audit/verify")
    assert status == 200 and "ok" in report
