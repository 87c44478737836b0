"""The read endpoints over HTTP (docs/api.md#reads): keys, key history, audit trail, bad input."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from events.models import Actor
from projections.key_views import KeyFilter, KeyViews
from service.http.context import SETTINGS
from service.service_keys import issue_service_key
from tests.support.api import Api, indexed, new_org


async def service_api(
    client: TestClient, pool: asyncpg.Pool, scopes: list[str], orgs: list[str] | None = None
) -> tuple[Api, str]:
    """The API as a new service key with ``scopes`` (and an org restriction)."""
    issued = await issue_service_key(
        pool,
        client.app[SETTINGS].pepper_bytes,
        name="query test",
        scopes=scopes,
        orgs=orgs,
        actor=Actor(id="test"),
    )
    await indexed(client, issued.position)
    return Api(client, issued.secret), issued.key_id


async def all_pages(api: Api, path: str, limit: int) -> list[dict[str, Any]]:
    keys, cursor = [], None
    while True:
        suffix = f"&cursor={cursor}" if cursor else ""
        status, _, body = await api.get(f"{path}{'&' if '?' in path else '?'}limit={limit}{suffix}")
        assert status == 200, body
        keys += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return keys


async def test_list_is_newest_first_with_filters(api: Api) -> None:
    org = new_org()
    made = [(await api.generate(org, name=f"k{i}"))["key"]["id"] for i in range(3)]
    test_key = (await api.generate(org, environment="test"))["key"]["id"]
    embed = (
        await api.generate(org, type="embed", allowed_origins=["https://a.example"], resource="r")
    )["key"]["id"]
    await api.post(f"/v1/orgs/{org}/keys/{made[0]}/disable")
    await api.post(f"/v1/orgs/{org}/keys/{made[1]}/revoke", {"reason": "unused"})
    base = f"/v1/orgs/{org}/keys"

    status, _, body = await api.get(base)
    assert status == 200 and body["next_cursor"] is None
    assert [k["id"] for k in body["data"]] == [embed, test_key, *reversed(made)]
    assert "secret_hash" not in body["data"][0]

    async def ids(query: str) -> list[str]:
        status, _, body = await api.get(f"{base}?{query}")
        assert status == 200, body
        return [k["id"] for k in body["data"]]

    assert await ids("status=disabled") == [made[0]]
    assert await ids("status=revoked") == [made[1]]
    assert await ids("status=active") == [embed, test_key, made[2]]
    assert await ids("status=expired") == []
    assert await ids("type=embed") == [embed]
    assert await ids("environment=test") == [test_key]
    assert await ids("environment=live&type=secret&status=active") == [made[2]]
    status, _, body = await api.get(f"/v1/orgs/{new_org()}/keys")
    assert status == 200 and body == {"data": [], "next_cursor": None}


async def test_cursor_is_stable_while_new_keys_arrive(api: Api) -> None:
    org = new_org()
    made = [(await api.generate(org, name=f"k{i}"))["key"]["id"] for i in range(5)]
    base = f"/v1/orgs/{org}/keys"
    status, _, first = await api.get(f"{base}?limit=2")
    assert status == 200 and len(first["data"]) == 2 and first["next_cursor"]
    arrived = (await api.generate(org, name="newcomer"))["key"]["id"]
    seen = [k["id"] for k in first["data"]]
    cursor = first["next_cursor"]
    while cursor:
        status, _, page = await api.get(f"{base}?limit=2&cursor={cursor}")
        assert status == 200
        seen += [k["id"] for k in page["data"]]
        cursor = page["next_cursor"]
    assert seen == list(reversed(made))
    assert [k["id"] for k in await all_pages(api, base, 4)] == [arrived, *reversed(made)]


async def test_status_expired_is_read_time(api: Api, pool: asyncpg.Pool) -> None:
    org = new_org()
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    key_id = (await api.generate(org, expires_at=soon))["key"]["id"]
    await api.get(f"/v1/orgs/{org}/keys/{key_id}")  # reads its own write: the view has it
    views = KeyViews()
    tomorrow = datetime.now(UTC) + timedelta(days=2)
    async with pool.acquire() as conn:
        expired = await views.page(
            conn, org, KeyFilter(status="expired"), before=None, limit=10, now=tomorrow
        )
        active = await views.page(
            conn, org, KeyFilter(status="active"), before=None, limit=10, now=tomorrow
        )
    assert [v.state.key_id for v in expired] == [key_id] and active == []
    assert expired[0].state.status == "active"  # no KeyExpired yet…
    assert expired[0].render(tomorrow)["status"] == "expired"  # …yet it reads expired


async def test_get_with_etag_and_min_position(api: Api) -> None:
    org = new_org()
    key = (await api.generate(org))["key"]
    path = f"/v1/orgs/{org}/keys/{key['id']}"
    status, headers, body = await api.get(path)
    assert status == 200 and headers["ETag"] == '"1"' and body == key
    for tag in ('"1"', 'W/"1"', '"7", "1"', "*"):
        status, headers, _ = await api.get(path, headers={"If-None-Match": tag})
        assert status == 304 and headers["ETag"] == '"1"'

    _, _, renamed = await api.post(f"{path}/rename", {"name": "new name"})
    status, headers, body = await api.get(f"{path}?min_position={renamed['position']}")
    assert status == 200 and body["name"] == "new name" and headers["ETag"] == '"2"'
    status, _, _ = await api.get(path, headers={"If-None-Match": '"1"'})
    assert status == 200

    status, _, body = await api.get(f"{path}?min_position=999999999")
    assert status == 503 and body["error"]["code"] == "not_caught_up"
    status, _, body = await api.get(f"/v1/orgs/{new_org()}/keys/{key['id']}")
    assert status == 404 and body["error"]["code"] == "key_not_found"


async def test_key_history_in_stream_order(api: Api) -> None:
    org = new_org()
    key_id = (await api.generate(org))["key"]["id"]
    await api.post(f"/v1/orgs/{org}/keys/{key_id}/disable", {"reason": "pause"})
    await api.post(f"/v1/orgs/{org}/keys/{key_id}/enable")
    status, _, body = await api.get(f"/v1/orgs/{org}/keys/{key_id}/events")
    assert status == 200
    events = body["data"]
    assert [e["event_type"] for e in events] == ["KeyGenerated", "KeyDisabled", "KeyEnabled"]
    assert [e["stream_version"] for e in events] == [1, 2, 3]
    assert events[1]["data"] == {"reason": "pause"} and len(events[2]["hash"]) == 64
    assert set(events[0]) == {
        *("event_id", "event_type", "schema_version", "org_id", "key_id", "stream_version"),
        *("position", "occurred_at", "actor", "data", "hash"),
    }
    status, _, body = await api.get(f"/v1/orgs/{new_org()}/keys/{key_id}/events")
    assert status == 404 and body["error"]["code"] == "key_not_found"


async def test_audit_filters_and_cursor(api: Api, client: TestClient, pool: asyncpg.Pool) -> None:
    org, other = new_org(), new_org()
    writer, writer_id = await service_api(client, pool, ["keys:write", "keys:read"])
    start = datetime.now(UTC)
    first = (await writer.generate(org))["key"]["id"]
    second = (await api.generate(org))["key"]["id"]
    await writer.post(f"/v1/orgs/{org}/keys/{first}/revoke", {"reason": "leaked"})
    await api.generate(other)

    async def audit(query: str) -> list[dict[str, Any]]:
        status, _, body = await api.get(f"/v1/audit?{query}")
        assert status == 200, body
        positions = [e["position"] for e in body["data"]]
        assert positions == sorted(positions)
        return body["data"]

    assert [e["key_id"] for e in await audit(f"org_id={org}")] == [first, second, first]
    assert [e["event_type"] for e in await audit(f"key_id={first}")] == [
        "KeyGenerated",
        "KeyRevoked",
    ]
    revoked = await audit(f"event_type=KeyRevoked&org_id={org}")
    assert [e["key_id"] for e in revoked] == [first]
    by_writer = await audit(f"actor={writer_id}&org_id={org}")
    assert [e["event_type"] for e in by_writer] == ["KeyGenerated", "KeyRevoked"]
    since = start.isoformat().replace("+00:00", "Z")
    assert len(await audit(f"org_id={org}&since={since}")) == 3
    assert await audit(f"org_id={org}&until={since}") == []
    assert len(await audit(f"org_id={org}&since={since}&until={since}")) == 0

    paged, after = [], 0
    while True:
        status, _, body = await api.get(f"/v1/audit?org_id={org}&limit=2&after={after}")
        assert status == 200
        paged += body["data"]
        if body["next_cursor"] is None:
            break
        after = body["next_cursor"]
    assert [e["event_id"] for e in paged] == [e["event_id"] for e in await audit(f"org_id={org}")]


async def test_scopes_and_org_restrictions(
    api: Api, client: TestClient, pool: asyncpg.Pool
) -> None:
    org, other = new_org(), new_org()
    key_id = (await api.generate(org))["key"]["id"]
    await api.generate(other)
    writer, _ = await service_api(client, pool, ["keys:write"])
    for path in (f"/v1/orgs/{org}/keys", f"/v1/orgs/{org}/keys/{key_id}", "/v1/audit"):
        status, _, body = await writer.get(path)
        assert status == 403 and body["error"]["code"] == "insufficient_scope", path
    status, _, body = await writer.get("/v1/audit/verify")
    assert status == 403

    auditor, _ = await service_api(client, pool, ["audit:read"], orgs=[org])
    status, _, body = await auditor.get("/v1/audit?limit=1000")
    assert status == 200 and {e["org_id"] for e in body["data"]} == {org}
    status, _, body = await auditor.get(f"/v1/audit?org_id={other}")
    assert status == 404 and body["error"]["code"] == "org_not_found"
    status, _, body = await auditor.get("/v1/audit?org_id=_system")
    assert status == 404

    reader, _ = await service_api(client, pool, ["keys:read"], orgs=[org])
    status, _, _ = await reader.get(f"/v1/orgs/{org}/keys")
    assert status == 200
    status, _, body = await reader.get(f"/v1/orgs/{other}/keys")
    assert status == 404 and body["error"]["code"] == "org_not_found"

    status, _, body = await api.get("/v1/audit?org_id=_system&limit=1")
    assert status == 200 and body["data"][0]["org_id"] == "_system"  # admin sees service keys


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("keys?limit=0", "invalid_limit"),
        ("keys?limit=101", "invalid_limit"),
        ("keys?limit=ten", "invalid_limit"),
        ("keys?status=sleeping", "unknown_status"),
        ("keys?type=public", "validation_error"),
        ("keys?environment=prod", "validation_error"),
        ("keys?cursor=not-a-cursor!", "invalid_cursor"),
        ("keys?cursor=eyJvIjogIngifQ", "invalid_cursor"),
        ("keys?min_position=-1", "invalid_min_position"),
        ("keys?min_position=1.5", "invalid_min_position"),
        ("keys?stauts=active", "validation_error"),
        ("keys?limit=1&limit=2", "validation_error"),
        ("audit?limit=0", "invalid_limit"),
        ("audit?limit=1001", "invalid_limit"),
        ("audit?event_type=KeyExploded", "unknown_event_type"),
        ("audit?since=yesterday", "invalid_timestamp"),
        ("audit?until=2030-01-01T00:00:00", "invalid_timestamp"),
        ("audit?since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z", "invalid_time_range"),
        ("audit?after=abc", "invalid_cursor"),
        ("audit?after=-5", "invalid_cursor"),
        ("audit?org_id=Bad Org", "validation_error"),
        ("audit?key_id=nope", "validation_error"),
        ("audit?min_position=x", "invalid_min_position"),
        ("audit?org=acme", "validation_error"),
    ],
)
async def test_bad_query_input_is_422(api: Api, query: str, code: str) -> None:
    org = "bad-input-org"
    path = f"/v1/orgs/{org}/{query}" if query.startswith("keys") else f"/v1/{query}"
    status, _, body = await api.get(path)
    assert status == 422, body
    assert body["error"]["code"] == code
    assert body["error"]["details"][0]["loc"][0] == "query"


async def test_a_cursor_of_another_org_or_filter_is_refused(api: Api) -> None:
    org = new_org()
    for i in range(3):
        await api.generate(org, name=f"k{i}")
    _, _, page = await api.get(f"/v1/orgs/{org}/keys?limit=1")
    cursor = page["next_cursor"]
    status, _, body = await api.get(f"/v1/orgs/{new_org()}/keys?cursor={cursor}")
    assert status == 422 and body["error"]["code"] == "invalid_cursor"
    status, _, body = await api.get(f"/v1/orgs/{org}/keys?status=revoked&cursor={cursor}")
    assert status == 422 and body["error"]["code"] == "invalid_cursor"
    status, _, body = await api.get(f"/v1/orgs/{org}/keys?cursor={cursor}")
    assert status == 200 and len(body["data"]) == 2


async def test_the_audit_trail_takes_the_first_and_last_instants_too(api: Api) -> None:
    status, _, body = await api.get(
        "/v1/audit?since=0001-01-01T00:00:00Z&until=9999-12-31T23:59:59.999999Z&limit=1"
    )
    assert status == 200, body
    assert len(body["data"]) == 1
