"""Identities over HTTP: PUT and GET, their events, and the limits their keys share."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import asyncpg
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from events.models import identity_stream_id
from service.http.context import KEYLEDGER
from tests.support import hostile
from tests.support.api import Api, new_org

LIMITS = [{"name": "customer", "limit": 3, "window": "1h"}]


def path(org: str, identity: str) -> str:
    return f"/v1/orgs/{org}/identities/{identity}"


async def verify(api: Api, **body: Any) -> dict[str, Any]:
    status, _, payload = await api.post("/v1/verify", body)
    assert status == 200, payload
    return payload


async def test_put_creates_replaces_and_get_reads(api: Api) -> None:
    org = new_org()
    status, headers, first = await api.put(path(org, "cus_42"), {"rate_limits": LIMITS})
    assert status == 201, first
    identity = first["identity"]
    assert (identity["id"], identity["org_id"], identity["version"]) == ("cus_42", org, 1)
    assert identity["rate_limits"] == LIMITS and identity["metadata"] == {}
    assert headers["ETag"] == '"1"'

    # The same identity again changes nothing: 200, no event, the same position.
    status, _, same = await api.put(path(org, "cus_42"), {"rate_limits": LIMITS})
    assert (status, same["position"], same["identity"]["version"]) == (200, first["position"], 1)

    wider = [{"name": "customer", "limit": 10, "window": "1m"}]
    status, _, changed = await api.put(
        path(org, "cus_42"),
        {"rate_limits": wider, "metadata": {"plan": "pro"}},
        headers={"If-Match": '"1"'},
    )
    assert status == 200 and changed["identity"]["version"] == 2
    status, _, read = await api.get(path(org, "cus_42"))
    assert status == 200 and read == changed["identity"]

    # A stale If-Match is refused and writes nothing.
    status, _, stale = await api.put(
        path(org, "cus_42"), {"rate_limits": []}, headers={"If-Match": '"1"'}
    )
    assert (status, stale["error"]["code"]) == (412, "version_mismatch")

    # Each change is one IdentityConfigured with before and after, in the audit trail.
    status, _, audit = await api.get(f"/v1/audit?org_id={org}&event_type=IdentityConfigured")
    assert status == 200
    events = audit["data"]
    assert [e["key_id"] for e in events] == [identity_stream_id(org, "cus_42")] * 2
    assert events[1]["data"]["previous_rate_limits"] == LIMITS
    assert events[1]["data"]["rate_limits"] == wider
    assert events[1]["data"]["metadata"] == {"plan": "pro"} and events[1]["data"]["existed"]


async def test_refusals(api: Api, client: TestClient) -> None:
    org = new_org()
    status, _, missing = await api.get(path(org, "nobody"))
    assert (status, missing["error"]["code"]) == (404, "identity_not_found")
    bad_bodies: list[Any] = [
        {},
        {"rate_limits": "x"},
        {"rate_limits": LIMITS * 2},  # the same name twice
        {"rate_limits": [{"name": f"n{i}", "limit": 1, "window": "1s"} for i in range(6)]},
        {"rate_limits": [{"name": "a", "limit": 0, "window": "1s"}]},
        {"rate_limits": [{"name": "a", "limit": 1, "window": "2s"}]},
        {"rate_limits": [], "metadata": "x"},
        {"rate_limits": [], "other": 1},
        [],
    ]
    for body in bad_bodies:
        status, _, error = await api.put(path(org, "cus_1"), body)
        assert (status, error["error"]["code"]) == (422, "validation_error"), body
    status, _, long_id = await api.put(path(org, "x" * 129), {"rate_limits": []})
    assert (status, long_id["error"]["code"]) == (422, "validation_error")
    status, _, _ = await api.put(path("Bad Org!", "cus_1"), {"rate_limits": []})
    assert status == 422
    # Nothing of the refused requests was written.
    status, _, _ = await api.get(path(org, "cus_1"))
    assert status == 404
    response = await client.put(path(org, "cus_1"), json={"rate_limits": []})
    assert response.status == 401


async def test_an_idempotent_put_is_answered_once(api: Api) -> None:
    org = new_org()
    headers = {"Idempotency-Key": f"idn-{org}"}
    first = await api.put(path(org, "cus_1"), {"rate_limits": LIMITS}, headers=headers)
    again = await api.put(path(org, "cus_1"), {"rate_limits": LIMITS}, headers=headers)
    assert (first[0], again[0]) == (201, 201)
    assert again[2] == {**first[2], "replayed": True}
    status, _, reused = await api.put(path(org, "cus_1"), {"rate_limits": []}, headers=headers)
    assert (status, reused["error"]["code"]) == (422, "idempotency_key_reused")


async def test_keys_of_one_identity_share_its_limits(api: Api) -> None:
    org = new_org()
    await api.put(path(org, "cus_7"), {"rate_limits": LIMITS})
    first = await api.generate(org, identity_id="cus_7")
    second = await api.generate(org, identity_id="cus_7")
    other = await api.generate(org, identity_id="cus_8")  # an identity never configured

    answers = [await verify(api, key=k["secret"]) for k in (first, second, first)]
    assert [a["code"] for a in answers] == ["VALID"] * 3
    assert answers[0]["key"]["identity_id"] == "cus_7"
    assert [a["ratelimits"][0]["remaining"] for a in answers] == [2, 1, 0]
    for key in (first, second):  # together they used the identity's 3
        refused = await verify(api, key=key["secret"])
        assert refused["code"] == "RATE_LIMITED" and refused["retry_after"] >= 1
    assert (await verify(api, key=other["secret"]))["code"] == "VALID"

    # A key that leaves the identity leaves its limits.
    status, _, _ = await api.patch(
        f"/v1/orgs/{org}/keys/{second['key']['id']}", {"identity_id": None}
    )
    assert status == 200
    assert (await verify(api, key=second["secret"]))["code"] == "VALID"
    # Widening the identity's limits applies at once to its keys.
    await api.put(
        path(org, "cus_7"), {"rate_limits": [{"name": "customer", "limit": 100, "window": "1h"}]}
    )
    assert (await verify(api, key=first["secret"]))["code"] == "VALID"


async def test_the_key_limit_and_the_identity_limit_both_hold(api: Api) -> None:
    org = new_org()
    await api.put(path(org, "cus_1"), {"rate_limits": LIMITS})
    key = await api.generate(
        org, identity_id="cus_1", rate_limits=[{"name": "own", "limit": 1, "window": "1h"}]
    )
    answer = await verify(api, key=key["secret"])
    assert answer["code"] == "VALID"
    assert [(s["name"], s["remaining"]) for s in answer["ratelimits"]] == [
        ("own", 0),
        ("customer", 2),
    ]
    refused = await verify(api, key=key["secret"])
    # Refused by its own limit: nothing is counted in the identity's either.
    assert refused["code"] == "RATE_LIMITED"
    assert [s["remaining"] for s in refused["ratelimits"]] == [0, 2]


async def test_identity_streams_are_no_keys_for_any_consumer(
    api: Api, client: TestClient, pool: asyncpg.Pool
) -> None:
    org = new_org()
    status, _, _ = await api.put(path(org, "cus_1"), {"rate_limits": LIMITS})
    assert status == 201
    key = await api.generate(org, identity_id="cus_1")
    app = client.app[KEYLEDGER]
    assert await app.projections.wait_for("key_views", key["position"], within=10)
    stream = identity_stream_id(org, "cus_1")
    assert (
        await pool.fetchval("SELECT count(*) FROM quarantined_keys WHERE key_id = $1", stream) == 0
    )
    assert stream not in app.index.quarantined and app.index.by_key_id(stream) is None
    assert await pool.fetchval("SELECT count(*) FROM key_views WHERE key_id = $1", stream) == 0
    status, _, listed = await api.get(f"/v1/orgs/{org}/keys?identity=cus_1")
    assert status == 200 and [k["id"] for k in listed["data"]] == [key["key"]["id"]]


@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    identity=hostile.texts,
    body=st.fixed_dictionaries(
        {"rate_limits": hostile.rate_limit_lists}, optional={"metadata": hostile.metadata}
    )
    | hostile.json_values,
)
async def test_hostile_identities_get_4xx_or_are_stored_whole(
    api: Api, pool: asyncpg.Pool, identity: str, body: Any
) -> None:
    org = new_org()
    # A lone surrogate goes out as the bytes a careless client would send.
    in_path = quote(identity.encode("utf-8", "surrogatepass"), safe="")
    status, _, answer = await api.put(path(org, in_path), body)
    assert status in (201, 400, 404, 405, 422), answer
    written = await pool.fetchval("SELECT count(*) FROM events WHERE org_id = $1", org)
    if status == 201:
        stored = answer["identity"]["id"]
        assert written == 1 and answer["position"] > 0
        assert answer["identity"]["rate_limits"] == body["rate_limits"]
        status, _, read = await api.get(path(org, quote(stored, safe="")))
        assert status == 200 and read == answer["identity"]
    else:
        assert written == 0 and "error" in answer
