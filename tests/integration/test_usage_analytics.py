"""Usage analytics: verifications counted per key, minute and code, read back per bucket."""

from __future__ import annotations

from datetime import timedelta

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.clock import utc_now
from service.http.context import KEYLEDGER
from tests.support import hostile
from tests.support.api import Api, new_org


async def test_verifications_are_counted_per_code_and_bucket(api: Api, client: TestClient) -> None:
    org = new_org()
    issued = await api.generate(org, scopes=["orders:read"])
    other = await api.generate(org)
    key_id = issued["key"]["id"]
    for _ in range(3):
        status, _, verdict = await api.post(
            "/v1/verify", {"key": issued["secret"], "min_position": other["position"]}
        )
        assert verdict.get("code") == "VALID", verdict
    _, _, verdict = await api.post(
        "/v1/verify", {"key": issued["secret"], "scopes": ["orders:write"]}
    )
    assert verdict["code"] == "INSUFFICIENT_SCOPE"
    await api.post("/v1/verify", {"key": other["secret"]})  # another key's count
    await client.app[KEYLEDGER].usage.flush()

    for granularity in ("minute", "hour", "day"):
        status, _, usage = await api.get(
            f"/v1/orgs/{org}/keys/{key_id}/usage?granularity={granularity}"
        )
        assert status == 200, usage
        assert usage["granularity"] == granularity
        totals = {
            name: sum(point[name] for point in usage["series"])
            for name in ("valid", "rate_limited", "usage_exceeded", "denied")
        }
        assert totals == {"valid": 3, "rate_limited": 0, "usage_exceeded": 0, "denied": 1}
        times = [point["t"] for point in usage["series"]]
        assert times == sorted(times) and len(set(times)) == len(times)
    # Buckets without use are there, with zeros: a chart needs no gaps.
    _, _, minutes = await api.get(f"/v1/orgs/{org}/keys/{key_id}/usage?granularity=minute")
    assert len(minutes["series"]) == 61


async def test_flushes_from_replicas_add_up(api: Api, client: TestClient) -> None:
    org = new_org()
    issued = await api.generate(org)
    usage = client.app[KEYLEDGER].usage
    for _ in range(2):
        await api.post("/v1/verify", {"key": issued["secret"]})
        await usage.flush()
    _, _, answer = await api.get(f"/v1/orgs/{org}/keys/{issued['key']['id']}/usage")
    assert sum(point["valid"] for point in answer["series"]) == 2


async def test_retention_prunes_old_minutes(api: Api, client: TestClient, pool) -> None:  # type: ignore[no-untyped-def]
    org = new_org()
    issued = await api.generate(org)
    key_id = issued["key"]["id"]
    old = utc_now().replace(second=0, microsecond=0) - timedelta(days=400)
    await pool.execute(
        "INSERT INTO key_usage_minutes (key_id, minute, code, count) VALUES ($1, $2, 'VALID', 5)",
        key_id,
        old,
    )
    recorder = client.app[KEYLEDGER].usage
    recorder._pruned_at = None  # due now
    await recorder.prune_if_due()
    assert (
        await pool.fetchval("SELECT count(*) FROM key_usage_minutes WHERE key_id = $1", key_id) == 0
    )


@pytest.mark.parametrize(
    "query",
    [
        "granularity=week",
        "granularity=",
        "since=2026-01-02T00:00:00Z&until=2026-01-01T00:00:00Z",
        "granularity=minute&since=2020-01-01T00:00:00Z&until=2026-01-01T00:00:00Z",
        "since=yesterday",
        "until=2026-01-01",
        "from=2026-01-01T00:00:00Z",
        "granularity=hour&granularity=day",
    ],
)
async def test_bad_queries_are_422(api: Api, query: str) -> None:
    org = new_org()
    issued = await api.generate(org)
    status, _, body = await api.get(f"/v1/orgs/{org}/keys/{issued['key']['id']}/usage?{query}")
    assert status == 422, (query, body)


async def test_other_orgs_keys_are_not_found(api: Api) -> None:
    org, other = new_org(), new_org()
    issued = await api.generate(org)
    for path in (
        f"/v1/orgs/{other}/keys/{issued['key']['id']}/usage",
        f"/v1/orgs/{org}/keys/key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P/usage",
        f"/v1/orgs/{org}/keys/nope/usage",
    ):
        status, _, body = await api.get(path)
        assert (status, body["error"]["code"]) == (404, "key_not_found"), path


@settings(max_examples=30, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(["since", "until", "granularity"]), value=hostile.texts)
async def test_hostile_query_values_get_a_clear_answer(
    api: Api, client: TestClient, name: str, value: str
) -> None:
    response = await client.get(
        "/v1/orgs/acme/keys/key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P/usage",
        params={name: value},
        headers=api.headers(),
    )
    assert response.status in (400, 404, 422), await response.text()
