"""GET /v1/orgs/{org}/events/stream: live events, scoped, resumable, never a secret hash."""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer

from service.http.app import create_app
from service.http.context import KEYLEDGER
from service.http.openapi import build_openapi
from service.settings import Settings
from tests.support.api import Api, indexed, new_org, service_key
from tests.support.declared_headers import declared_headers, missing_headers
from tests.support.sse import SseReader


def stream_path(org: str) -> str:
    return f"/v1/orgs/{org}/events/stream"


async def open_stream(
    client: TestClient, key: str, org: str, last_event_id: str | None = None
) -> SseReader:
    headers = {"Authorization": f"Bearer {key}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    response = await client.get(stream_path(org), headers=headers)
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return SseReader(response)


async def test_an_orgs_events_arrive_live_in_order_without_secret_hashes(
    client: TestClient, api: Api
) -> None:
    org, other = new_org(), new_org()
    reader = await open_stream(client, api.service_key, org)
    try:
        await api.generate(other, name="someone else's")
        made = await api.generate(org, name="Bot")
        key_id = made["key"]["id"]
        status, _, revoked = await api.post(
            f"/v1/orgs/{org}/keys/{key_id}/revoke", {"reason": "leaked"}
        )
        assert status == 200
        generated = await reader.next()
        assert (generated.event, generated.id) == ("KeyGenerated", str(made["position"]))
        body = generated.json()
        assert body["org_id"] == org and body["key_id"] == key_id
        assert body["data"]["name"] == "Bot"
        assert "secret_hash" not in body["data"]
        assert made["secret"] not in generated.data
        revocation = await reader.next()
        assert (revocation.event, revocation.id) == ("KeyRevoked", str(revoked["position"]))
        assert revocation.json()["data"] == {"reason": "leaked"}
    finally:
        reader.response.close()


async def test_the_stream_sends_the_headers_its_document_declares(
    client: TestClient, api: Api, settings: Settings
) -> None:
    reader = await open_stream(client, api.service_key, new_org())
    try:
        document, path = build_openapi(), stream_path("{org_id}")
        assert "Keyledger-Heartbeat-Seconds" in declared_headers(document, path, "get", 200)
        sent = reader.response.headers
        assert missing_headers(document, path, "get", 200, sent, optional_too=True) == set()
        interval = reader.response.headers["Keyledger-Heartbeat-Seconds"]
        assert float(interval) == settings.event_stream_heartbeat_seconds
    finally:
        reader.response.close()


async def test_last_event_id_resumes_from_the_log_then_follows_live(
    client: TestClient, api: Api
) -> None:
    org = new_org()
    first = await api.generate(org, name="one")
    rotated_status, _, rotated = await api.post(
        f"/v1/orgs/{org}/keys/{first['key']['id']}/rotate", {"grace_period": "0s"}
    )
    assert rotated_status == 200
    second = await api.generate(org, name="two")
    reader = await open_stream(client, api.service_key, org, str(first["position"]))
    try:
        resumed = [await reader.next(), await reader.next()]
        assert [(e.event, e.id) for e in resumed] == [
            ("KeyRotated", str(rotated["position"])),
            ("KeyGenerated", str(second["position"])),
        ]
        assert "secret_hash" not in resumed[0].json()["data"]
        third = await api.generate(org, name="three")
        live = await reader.next()
        assert (live.event, live.id) == ("KeyGenerated", str(third["position"]))
    finally:
        reader.response.close()


async def test_open_streams_are_counted_in_metrics(client: TestClient, api: Api) -> None:
    reader = await open_stream(client, api.service_key, new_org())
    try:
        text = await (await client.get("/metrics")).text()
        (watchers,) = re.findall(r"^keyledger_event_stream_watchers (\S+)$", text, re.M)
        assert float(watchers) >= 1
        assert re.search(r"^keyledger_event_stream_slow_drops \S+$", text, re.M)
    finally:
        reader.response.close()


async def test_the_stream_is_scoped_like_other_reads(
    client: TestClient, api: Api, settings: Settings
) -> None:
    mine, theirs = new_org(), new_org()
    restricted = await service_key(client, settings, ["keys:read"], orgs=[mine])
    verifier = await service_key(client, settings, ["keys:verify"])
    reader = await open_stream(client, restricted, mine)
    reader.response.close()
    cases = [
        (restricted, theirs, 404, "org_not_found"),
        (verifier, mine, 403, "insufficient_scope"),
        ("sk_live_nonsense", mine, 401, "invalid_api_key"),
    ]
    for key, org, status, code in cases:
        response = await client.get(stream_path(org), headers={"Authorization": f"Bearer {key}"})
        assert response.status == status
        assert (await response.json())["error"]["code"] == code


@pytest.mark.parametrize("value", ["abc", "-1", "1.5", "9" * 30, "١٢"])
async def test_a_bad_last_event_id_is_refused(client: TestClient, api: Api, value: str) -> None:
    response = await client.get(
        stream_path(new_org()), headers={**api.headers(), "Last-Event-ID": value}
    )
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "invalid_header"


async def test_a_position_beyond_the_log_is_not_caught_up(client: TestClient, api: Api) -> None:
    response = await client.get(
        stream_path(new_org()), headers={**api.headers(), "Last-Event-ID": str(10**15)}
    )
    assert response.status == 503
    assert (await response.json())["error"]["code"] == "not_caught_up"


@pytest.fixture(scope="module")
async def heartbeating(settings: Settings) -> AsyncIterator[TestClient]:
    """A second replica whose streams beat (and re-check their caller) every 50 ms."""
    fast = settings.model_copy(update={"event_stream_heartbeat_seconds": 0.05})
    async with TestClient(TestServer(create_app(fast))) as replica:
        yield replica


async def test_heartbeats_keep_the_stream_and_a_revoked_caller_is_cut_off(
    heartbeating: TestClient, api: Api, settings: Settings
) -> None:
    org = new_org()
    watcher = await service_key(heartbeating, settings, ["keys:read"])
    reader = await open_stream(heartbeating, watcher, org)
    try:
        made = await api.generate(org)
        assert (await reader.next()).id == str(made["position"])
        await _a_heartbeat(reader)
        watcher_id = heartbeating.app[KEYLEDGER].callers.recognised(watcher).key_id
        status, _, revoked = await api.post(
            f"/v1/orgs/_system/keys/{watcher_id}/revoke", {"reason": "other"}
        )
        assert status == 200
        await indexed(heartbeating, revoked["position"])
        closing = await reader.next_of("close")
        assert closing.json() == {"reason": "unauthorized"}
    finally:
        reader.response.close()


async def _a_heartbeat(reader: SseReader) -> None:
    # Heartbeats are comments, which the reader collects while it waits for an event.
    while "heartbeat" not in reader.comments:
        with contextlib.suppress(TimeoutError):
            await reader.next(within=0.5)


async def test_a_replica_stopping_closes_its_streams(api: Api, settings: Settings) -> None:
    org = new_org()
    async with TestClient(TestServer(create_app(settings))) as replica:
        reader = await open_stream(replica, api.service_key, org)
        replica.app[KEYLEDGER].fanout.close_all()
        closing = await reader.next()
        assert (closing.event, closing.json()) == ("close", {"reason": "shutdown"})
        reader.response.close()
