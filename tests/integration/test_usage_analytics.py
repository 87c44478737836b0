"""Usage analytics: verifications counted per key, minute and code, read back per bucket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from service.clock import utc_now
from service.http.context import KEYLEDGER
from service.usage_analytics import MAX_BUCKETS
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


@pytest.mark.parametrize(
    ("query", "buckets"),
    [
        # generate_series from year 1's first instant (sent as -infinity) never ended.
        ("since=0001-01-01T00:30:00Z&until=0001-01-01T02:00:00Z&granularity=hour", 3),
        # The default since fell before year 1: OverflowError, 500.
        ("until=0001-01-01T05:00:00Z&granularity=day", 1),
        ("until=0001-01-01T00:05:00Z&granularity=minute", 6),
        # The documented extremes themselves.
        ("since=0001-01-01T00:00:00Z&until=0001-01-03T00:00:00Z&granularity=day", 3),
        ("since=9999-12-31T00:00:00Z&until=9999-12-31T23:59:59.999999Z&granularity=hour", 24),
        ("until=9999-12-31T23:59:59.999999Z&granularity=day", 31),
    ],
)
async def test_ranges_at_the_ends_of_time_answer_every_bucket(
    api: Api, pool, query: str, buckets: int
) -> None:  # type: ignore[no-untyped-def]
    org = new_org()
    issued = await api.generate(org)
    key_id = issued["key"]["id"]
    # A count at year 1's first minute and one at year 9999's last: both inside their bucket.
    await pool.execute(
        "INSERT INTO key_usage_minutes (key_id, minute, code, count) VALUES"
        " ($1, '0001-01-01T00:00:00Z', 'VALID', 2), ($1, '9999-12-31T23:59:00Z', 'EXPIRED', 3)",
        key_id,
    )
    status, _, usage = await api.get(f"/v1/orgs/{org}/keys/{key_id}/usage?{query}")
    assert status == 200, usage
    assert len(usage["series"]) == buckets
    first, last = usage["series"][0], usage["series"][-1]
    if first["t"].startswith("0001-01-01T00:00"):
        assert first["valid"] == 2
    if last["t"].startswith("9999-12-31"):
        assert last["denied"] == 3


async def test_since_after_until_in_one_bucket_is_422(api: Api) -> None:
    org = new_org()
    issued = await api.generate(org)
    status, _, body = await api.get(
        f"/v1/orgs/{org}/keys/{issued['key']['id']}/usage"
        "?since=2026-01-01T10:30:00Z&until=2026-01-01T10:10:00Z&granularity=hour"
    )
    assert (status, body["error"]["code"]) == (422, "invalid_time_range")


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    granularity=st.sampled_from(["minute", "hour", "day"]),
    since=st.none() | st.datetimes(timezones=st.just(UTC)),
    until=st.none() | st.datetimes(timezones=st.just(UTC)),
    offset=st.sampled_from(["Z", "+00:00", "-00:00"]),
)
@example(
    granularity="hour",
    since=datetime(1, 1, 1, 0, 30, tzinfo=UTC),
    until=datetime(1, 1, 1, 2, tzinfo=UTC),
    offset="Z",
)
@example(granularity="day", since=datetime.min.replace(tzinfo=UTC), until=None, offset="Z")
@example(granularity="minute", since=None, until=datetime.max.replace(tzinfo=UTC), offset="Z")
async def test_any_range_in_years_1_to_9999_is_bounded_or_refused(
    api: Api,
    client: TestClient,
    usage_key: tuple[str, str],
    granularity: str,
    since: datetime | None,
    until: datetime | None,
    offset: str,
) -> None:
    org, key_id = usage_key
    params = {"granularity": granularity}
    for name, moment in (("since", since), ("until", until)):
        if moment is not None:
            params[name] = moment.replace(tzinfo=None).isoformat() + offset
    response = await client.get(
        f"/v1/orgs/{org}/keys/{key_id}/usage", params=params, headers=api.headers()
    )
    body = await response.json()
    if response.status == 422:
        assert body["error"]["code"] == "invalid_time_range", (params, body)
        return
    assert response.status == 200, (params, body)
    assert 1 <= len(body["series"]) <= MAX_BUCKETS


@pytest.fixture
async def usage_key(api: Api) -> tuple[str, str]:
    org = new_org()
    issued = await api.generate(org)
    return org, issued["key"]["id"]
