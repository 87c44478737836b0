"""Operations endpoints: /healthz, /readyz, /metrics, /openapi.json, and the access log."""

from __future__ import annotations

import asyncio
import io
import json

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from service.embedded import free_port
from service.http.app import create_app
from service.http.health_routes import assess_readiness
from service.http.openapi import build_openapi
from service.http.vitals import Vitals
from service.settings import Settings
from tests.support.api import Api, new_org


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _ready(client: TestClient) -> tuple[int, dict]:
    for _ in range(50):
        response = await client.get("/readyz")
        body = await response.json()
        if response.status == 200:
            break
        await asyncio.sleep(0.1)
    return response.status, body


async def test_healthz_and_readyz_answer_when_all_is_well(client: TestClient) -> None:
    assert (await client.get("/healthz")).status == 200
    status, body = await _ready(client)
    assert (status, body) == (200, {"status": "ready"})


async def test_readyz_is_degraded_not_down_when_nats_is_unreachable(settings: Settings) -> None:
    # NATS configured but nobody listens there: every replica shares that outage, and
    # verification still works from PostgreSQL, so no load balancer may drain the fleet.
    unreachable = settings.replace(
        nats_url=f"nats://127.0.0.1:{free_port()}", nats_stream="READYZ_TEST"
    )
    async with TestClient(TestServer(create_app(unreachable))) as other:
        response = await other.get("/readyz")
        body = await response.json()
        metrics = _samples(await (await other.get("/metrics")).text())
    assert response.status == 200
    assert body["status"] == "degraded"
    assert "nats: not connected" in body["degraded"]
    assert "problems" not in body
    assert metrics[("keyledger_nats_connected", ())] == 0
    assert metrics[("keyledger_ready", ())] == 1
    assert metrics[("keyledger_degraded", ())] == 1


def test_readiness_sorts_this_replica_from_what_all_replicas_share() -> None:
    behind = Vitals(
        database_ok=True,
        log_head=1000,
        nats_configured=True,
        nats_connected=True,
        relay_problem=None,
        outbox_lag=500,
        index_keys=10,
        index_position=10,
        projection_positions={"key_views": 999},
        projection_failures={},
    )
    readiness = assess_readiness(behind, max_lag=100)
    assert readiness.problems == ["verification index: 990 events behind the log"]
    assert readiness.degraded == ["outbox relay: 500 events not yet published to NATS"]
    assert readiness.status == "not_ready"
    shared = Vitals(
        database_ok=True,
        log_head=1000,
        nats_configured=True,
        nats_connected=False,
        relay_problem="publish: TimeoutError()",
        outbox_lag=236,
        index_keys=10,
        index_position=1000,
        projection_positions={"key_views": 800},
        quarantine_counts={"key_views": 2, "outbox_relay:KEYLEDGER": 1},
    )
    readiness = assess_readiness(shared, max_lag=100)
    assert readiness.problems == []
    assert readiness.status == "degraded"
    assert readiness.degraded == [
        "nats: not connected",
        "outbox relay: publish: TimeoutError()",
        "outbox relay: 236 events not yet published to NATS",
        "projection key_views: 200 events behind the log",
        "quarantine: key_views has set aside 2 key(s)",
        "quarantine: outbox_relay:KEYLEDGER has set aside 1 key(s)",
    ]
    damaged = Vitals(
        database_ok=True,
        log_head=10,
        nats_configured=False,
        nats_connected=None,
        relay_problem=None,
        outbox_lag=None,
        index_keys=1,
        index_position=10,
        projection_positions={"key_views": 7},
        projection_failures={"key_views": "key_views: expected position 8, found 9"},
        integrity_problems=["log_truncated: head 10 is behind the witness at 12"],
    )
    assert assess_readiness(damaged, max_lag=100).problems == [
        "log integrity: log_truncated: head 10 is behind the witness at 12",
        "log integrity: projection key_views stopped (key_views: expected position 8, found 9)",
    ]
    down = Vitals(
        database_ok=False,
        log_head=None,
        nats_configured=False,
        nats_connected=None,
        relay_problem=None,
        outbox_lag=None,
        index_keys=None,
        index_position=None,
    )
    readiness = assess_readiness(down, max_lag=100)
    assert readiness.problems == ["database: not answering", "verification index: not loaded"]
    assert readiness.degraded == ["projections: not running on this replica"]


async def test_metrics_count_requests_verdicts_and_lags(api: Api, client: TestClient) -> None:
    created = await api.generate(new_org())
    for _ in range(2):
        body = {"key": created["secret"], "min_position": created["position"]}
        status, _, verdict = await api.post("/v1/verify", body)
        assert status == 200 and verdict["code"] == "VALID"
    await api.post("/v1/verify", {"key": "sk_live_bad"})
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.content_type == "text/plain"
    samples = _samples(await response.text())
    assert samples[("keyledger_verify_outcomes_total", (("code", "VALID"),))] >= 2
    assert samples[("keyledger_verify_outcomes_total", (("code", "MALFORMED"),))] >= 1
    verify_count = (
        "keyledger_http_request_duration_seconds_count",
        (("method", "POST"), ("route", "/v1/verify"), ("status_class", "2xx")),
    )
    assert samples[verify_count] >= 3
    generate_count = (
        "keyledger_http_request_duration_seconds_count",
        (("method", "POST"), ("route", "/v1/orgs/{org_id}/keys"), ("status_class", "2xx")),
    )
    assert samples[generate_count] >= 1
    assert samples[("keyledger_verification_index_keys", ())] >= 2
    assert samples[("keyledger_log_head_position", ())] >= created["position"]
    assert ("keyledger_projection_lag_events", (("projection", "key_views"),)) in samples
    assert samples[("keyledger_database_up", ())] == 1
    # No secret ever reaches a metric.
    assert created["secret"] not in await response.text()


async def test_each_app_has_its_own_registry(settings: Settings, client: TestClient) -> None:
    async with TestClient(TestServer(create_app(settings))) as other:
        await other.get("/healthz")
        await other.get("/healthz")
        other_text = await (await other.get("/metrics")).text()
    healthz = (
        "keyledger_http_request_duration_seconds_count",
        (("method", "GET"), ("route", "/healthz"), ("status_class", "2xx")),
    )
    assert _samples(other_text)[healthz] == 2


async def test_openapi_describes_every_route(client: TestClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    document = await response.json()
    assert document == json.loads(json.dumps(build_openapi()))
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in client.app.router.routes()
        if route.method != "HEAD"
    }
    described = {(method, path) for path, ops in document["paths"].items() for method in ops}
    assert served == described
    schemas = document["components"]["schemas"]
    assert set(schemas["GenerateKeyBody"]["properties"]) >= {"name", "type", "expires_in"}
    assert schemas["GenerateKeyBody"]["additionalProperties"] is False
    assert set(schemas["ErrorDetail"]["required"]) == {"code", "message", "request_id"}
    generate = document["paths"]["/v1/orgs/{org_id}/keys"]["post"]
    assert generate["security"] == [{"ServiceKey": []}]
    assert {"201", "401", "409", "413", "415", "422"} <= set(generate["responses"])
    authorize = document["paths"]["/v1/authorize"]["get"]
    assert authorize["security"] == [{"ProxyServiceKey": []}]


async def test_one_access_line_per_request(
    api: Api, client: TestClient, captured_logs: io.StringIO
) -> None:
    before = len(captured_logs.getvalue().splitlines())
    sneaky = "sk_live_" + "A" * 49  # a secret smuggled in as a request id is still masked
    await client.get("/healthz", headers={"X-Request-Id": "trace-123"})
    await client.get("/nowhere", headers={"X-Request-Id": sneaky})
    await api.post("/v1/verify", {"key": "sk_live_bad"}, headers={"X-Request-Id": "trace-456"})
    lines = [json.loads(line) for line in captured_logs.getvalue().splitlines()[before:]]
    access = [line for line in lines if line.get("event") == "request"]
    by_id = {line["request_id"]: line for line in access}
    assert by_id["trace-123"]["route"] == "/healthz" and by_id["trace-123"]["status"] == 200
    # A secret-shaped request id is not taken at all: the request gets a generated one.
    assert sneaky not in captured_logs.getvalue() and "[redacted]" not in by_id
    assert any(line["route"] == "unmatched" and line["status"] == 404 for line in access)
    verify = by_id["trace-456"]
    assert verify["route"] == "/v1/verify" and verify["caller_key_id"].startswith("key_")
    assert verify["level"] == "info" and verify["timestamp"].endswith("Z")
    assert isinstance(verify["duration_ms"], float)
    assert sneaky not in captured_logs.getvalue()
