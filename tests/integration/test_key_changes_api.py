"""PATCH /v1/orgs/{org}/keys/{id} over HTTP against PostgreSQL (docs/api.md#patch-v1orgsorgkeysid).

Each aspect changed is one event with before and after; the key views, the
audit trail and the verification index of this and another replica follow.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.http.context import KEYLEDGER
from service.settings import Settings
from tests.support import hostile
from tests.support.api import Api, new_org
from tests.support.replicas import in_process_replica


async def events_of(pool: asyncpg.Pool, key_id: str) -> list[tuple[str, dict[str, Any]]]:
    rows = await pool.fetch(
        "SELECT event_type, data FROM events WHERE key_id = $1 ORDER BY stream_version", key_id
    )
    return [(r["event_type"], json.loads(r["data"])) for r in rows]


async def verify(api: Api, **body: Any) -> dict[str, Any]:
    status, _, payload = await api.post("/v1/verify", body)
    assert status == 200, payload
    return payload


async def test_each_changed_aspect_is_one_event_with_before_and_after(
    api: Api, pool: asyncpg.Pool
) -> None:
    org = new_org()
    created = await api.generate(org, scopes=["orders:read"], metadata={"plan": "free"})
    key_id = created["key"]["id"]
    status, headers, body = await api.patch(
        f"/v1/orgs/{org}/keys/{key_id}",
        {
            "scopes": ["orders:read", "orders:write"],
            "metadata": {"plan": "pro"},
            "rate_limits": [{"name": "burst", "limit": 10, "window": "1s"}],
            "credits": {"remaining": 50, "refill": {"amount": 50, "interval": "monthly"}},
            "allowed_cidrs": ["10.0.0.0/8", "2001:DB8::/32"],
            "expires_at": "2040-01-01T00:00:00Z",
            "identity_id": "cus_42",
            "name": "Test key",  # unchanged: no event
        },
        headers={"If-Match": '"1"'},
    )
    assert status == 200, body
    key = body["key"]
    assert key["version"] == 8 and headers["ETag"] == '"8"'
    assert key["scopes"] == ["orders:read", "orders:write"] and key["metadata"] == {"plan": "pro"}
    assert key["rate_limits"] == [{"name": "burst", "limit": 10, "window": "1s"}]
    assert key["rate_limit"] is None
    assert key["credits"] == {
        "remaining": 50,
        "refill": {"amount": 50, "interval": "monthly", "day": None},
    }
    assert key["allowed_cidrs"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert key["expires_at"] == "2040-01-01T00:00:00.000000Z" and key["identity_id"] == "cus_42"

    history = await events_of(pool, key_id)
    assert [t for t, _ in history] == [
        "KeyGenerated",
        "KeyScopesChanged",
        "KeyMetadataChanged",
        "KeyRateLimitsChanged",
        "KeyCreditsChanged",
        "KeyIpAllowlistChanged",
        "KeyExpiryChanged",
        "KeyIdentityChanged",
    ]
    changes = dict(history[1:])
    assert changes["KeyScopesChanged"] == {
        "scopes": ["orders:read", "orders:write"],
        "previous_scopes": ["orders:read"],
    }
    assert changes["KeyMetadataChanged"]["previous_metadata"] == {"plan": "free"}
    assert changes["KeyExpiryChanged"]["previous_expires_at"] is None
    assert changes["KeyIdentityChanged"] == {"identity_id": "cus_42", "previous_identity_id": None}

    # The key views, the audit trail and the identity filter follow.
    status, _, fetched = await api.get(
        f"/v1/orgs/{org}/keys/{key_id}?min_position={body['position']}"
    )
    assert status == 200 and fetched == key
    status, _, audit = await api.get(f"/v1/audit?key_id={key_id}&event_type=KeyScopesChanged")
    assert status == 200 and [e["data"] for e in audit["data"]] == [changes["KeyScopesChanged"]]
    status, _, page = await api.get(f"/v1/orgs/{org}/keys?identity=cus_42")
    assert status == 200 and [k["id"] for k in page["data"]] == [key_id]
    status, _, page = await api.get(f"/v1/orgs/{org}/keys?identity=cus_43")
    assert status == 200 and page["data"] == []


async def test_verify_follows_a_change_at_once(api: Api) -> None:
    org = new_org()
    created = await api.generate(org, scopes=["orders:read"])
    secret, key_id = created["secret"], created["key"]["id"]
    assert (await verify(api, key=secret, scopes=["orders:write"]))["code"] == (
        "INSUFFICIENT_SCOPE"
    )
    status, _, _ = await api.patch(
        f"/v1/orgs/{org}/keys/{key_id}", {"scopes": ["orders:*"], "metadata": {"tier": 2}}
    )
    assert status == 200
    answer = await verify(api, key=secret, scopes=["orders:write"])
    assert answer["code"] == "VALID" and answer["key"]["metadata"] == {"tier": 2}
    assert answer["key"]["scopes"] == ["orders:*"]


async def test_another_replica_follows_a_change(
    api: Api, client: TestClient, settings: Settings
) -> None:
    org = new_org()
    async with in_process_replica(settings) as replica:
        created = await api.generate(org, scopes=["a:read"])
        secret, key_id = created["secret"], created["key"]["id"]
        status, _, body = await api.patch(f"/v1/orgs/{org}/keys/{key_id}", {"scopes": ["b:read"]})
        assert status == 200
        # Fed by notifications and JetStream, not by this command: wait for its position.
        assert await replica.app[KEYLEDGER].feed.wait_for(body["position"], 10.0)
        entry = replica.app[KEYLEDGER].index.by_key_id(key_id)
        assert entry is not None and entry.scopes == ("b:read",)
        through_replica = Api(replica, api.service_key)
        answer = await verify(through_replica, key=secret, scopes=["b:read"])
        assert answer["code"] == "VALID"


async def test_a_patch_that_changes_nothing_writes_nothing(api: Api, pool: asyncpg.Pool) -> None:
    org = new_org()
    created = await api.generate(org, scopes=["a:read"], metadata={"x": 1})
    key_id = created["key"]["id"]
    for body in ({}, None, {"scopes": ["a:read"], "metadata": {"x": 1}, "expires_at": None}):
        status, _, answer = await api.patch(f"/v1/orgs/{org}/keys/{key_id}", body)
        assert status == 200, answer
        assert answer["position"] == created["position"] and answer["key"]["version"] == 1
    assert len(await events_of(pool, key_id)) == 1


async def test_if_match_and_terminal_keys(api: Api, pool: asyncpg.Pool) -> None:
    org = new_org()
    key_id = (await api.generate(org))["key"]["id"]
    path = f"/v1/orgs/{org}/keys/{key_id}"
    status, _, body = await api.patch(path, {"scopes": ["a:b"]}, headers={"If-Match": '"7"'})
    assert (status, body["error"]["code"]) == (412, "version_mismatch")
    await api.post(f"{path}/revoke", {"reason": "unused"})
    status, _, body = await api.patch(path, {"scopes": ["a:b"]})
    assert (status, body["error"]["code"]) == (409, "key_not_mutable")
    assert [t for t, _ in await events_of(pool, key_id)] == ["KeyGenerated", "KeyRevoked"]


async def test_refusals_write_nothing(api: Api, pool: asyncpg.Pool) -> None:
    org = new_org()
    key_id = (await api.generate(org))["key"]["id"]
    path = f"/v1/orgs/{org}/keys/{key_id}"
    refused: list[tuple[Any, int, str]] = [
        ({"allowed_origins": ["https://a.example"]}, 422, "validation_error"),  # not embed
        ({"scopes": ["a:b"], "expires_at": "2001-01-01T00:00:00Z"}, 422, "validation_error"),
        ({"name": None}, 422, "validation_error"),
        ({"expires_on": "2040-01-01T00:00:00Z"}, 422, "validation_error"),
        ({"allowed_cidrs": ["10.0.0.1/8"]}, 422, "validation_error"),
        ([1, 2], 422, "validation_error"),
    ]
    for body, status_code, code in refused:
        status, _, answer = await api.patch(path, body)
        assert (status, answer["error"]["code"]) == (status_code, code), body
    status, _, answer = await api.patch(f"/v1/orgs/{org}/keys/key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P", {})
    assert (status, answer["error"]["code"]) == (404, "key_not_found")
    response = await api.client.patch(
        path, data=b"{", headers=api.headers(**{"Content-Type": "application/json"})
    )
    assert response.status == 400
    assert len(await events_of(pool, key_id)) == 1


async def test_service_keys_cannot_gain_authority_by_a_change(api: Api) -> None:
    status, _, created = await api.post(
        "/v1/orgs/_system/keys", {"name": "svc", "type": "secret", "scopes": ["keys:read"]}
    )
    assert status == 201
    path = f"/v1/orgs/_system/keys/{created['key']['id']}"
    for body in (
        {"scopes": ["keys:read", "orders:write"]},
        {"metadata": {"orgs": "everything"}},
        {"identity_id": "cus_1"},
    ):
        status, _, answer = await api.patch(path, body)
        assert (status, answer["error"]["code"]) == (422, "validation_error"), body
    status, _, answer = await api.patch(path, {"scopes": ["keys:read", "keys:verify"]})
    assert status == 200 and answer["key"]["scopes"] == ["keys:read", "keys:verify"]


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=hostile.update_bodies | st.lists(st.integers(), max_size=2) | st.none())
async def test_hostile_patch_bodies_get_4xx_or_whole_changes(
    api: Api, pool: asyncpg.Pool, body: Any
) -> None:
    org = new_org()
    created = await api.generate(
        org, type="embed", resource="r", allowed_origins=["https://a.example"]
    )
    key_id = created["key"]["id"]
    status, _, answer = await api.patch(f"/v1/orgs/{org}/keys/{key_id}", body)
    assert status in (200, 400, 422), answer
    written = len(await events_of(pool, key_id)) - 1
    if status == 200:
        assert answer["key"]["version"] == 1 + written
        status, _, fetched = await api.get(
            f"/v1/orgs/{org}/keys/{key_id}?min_position={answer['position']}"
        )
        assert fetched == answer["key"]
    else:
        assert written == 0 and "error" in answer


async def test_verify_answers_the_identity(api: Api) -> None:
    org = new_org()
    created = await api.generate(org, identity_id="cus_7")
    assert created["key"]["identity_id"] == "cus_7"
    answer = await verify(api, key=created["secret"])
    assert answer["key"]["identity_id"] == "cus_7"
    status, _, body = await api.patch(
        f"/v1/orgs/{org}/keys/{created['key']['id']}", {"identity_id": None}
    )
    assert status == 200 and body["key"]["identity_id"] is None
    assert (await verify(api, key=created["secret"]))["key"]["identity_id"] is None
    for bad in ("", "a%0Ab", "x" * 129):  # percent-encoded: a URL drops a raw newline
        status, _, error = await api.get(f"/v1/orgs/{org}/keys?identity={bad}")
        assert (status, error["error"]["code"]) == (422, "validation_error"), bad
