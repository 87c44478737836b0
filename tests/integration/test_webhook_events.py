"""Registering and removing a webhook endpoint are events in the one log.

On the session app (real PostgreSQL): who did it is in the audit trail, the
secret is nowhere in the log, every consumer of the log (the key view, the
verification index, the event stream) takes the events without setting
anything aside, and the chain still verifies. With a relay
(real NATS): the events are published like any other, and no endpoint is
sent them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from events.codec import decode
from events.models import WebhookRegistered, WebhookRemoved
from service.http.context import KEYLEDGER
from service.settings import Settings
from service.webhooks.endpoints import new_webhook_id
from tests.integration.test_event_stream import open_stream
from tests.integration.test_webhook_delivery import call, register, webhook_app
from tests.support.api import Api, new_org, service_key
from tests.support.outbox import eventually, jetstream, stream_messages
from tests.support.receiver import running_receiver


async def test_registration_and_removal_are_in_the_audit_trail_with_their_actor(
    api: Api, client: TestClient, pool: asyncpg.Pool
) -> None:
    org = new_org()
    status, _, created = await api.post(
        f"/v1/orgs/{org}/webhooks",
        {"url": "https://hooks.example.com/k", "event_types": ["KeyRevoked"]},
        headers={"X-On-Behalf-Of": "user:7", "X-Request-Id": "req-register-hook"},
    )
    assert status == 201, created
    webhook_id = created["webhook"]["id"]
    path = f"/v1/orgs/{org}/webhooks/{webhook_id}"
    headers = api.headers(**{"X-On-Behalf-Of": "user:9", "X-Request-Id": "req-remove-hook"})
    assert (await client.delete(path, headers=headers)).status == 200
    assert (await client.delete(path, headers=api.headers())).status == 200  # nothing more

    status, _, audit = await api.get(f"/v1/audit?org_id={org}")
    assert status == 200
    events = audit["data"]
    assert [(e["event_type"], e["key_id"], e["stream_version"]) for e in events] == [
        ("WebhookRegistered", webhook_id, 1),
        ("WebhookRemoved", webhook_id, 2),
    ]
    registered, removed = events
    assert registered["data"] == {
        "webhook_id": webhook_id,
        "url": "https://hooks.example.com/k",
        "event_types": ["KeyRevoked"],
    }
    assert removed["data"] == {"webhook_id": webhook_id}
    admin = created["webhook"]["created_by"]["id"]
    assert registered["actor"] == {
        "id": admin,
        "on_behalf_of": "user:7",
        "request_id": "req-register-hook",
    }
    assert removed["actor"] == {
        "id": admin,
        "on_behalf_of": "user:9",
        "request_id": "req-remove-hook",
    }
    # The API's created_by / removed_by are the events' actors.
    _, _, one = await api.get(path)
    assert one["webhook"]["created_by"] == registered["actor"]
    assert one["webhook"]["removed_by"] == removed["actor"]
    assert one["webhook"]["removed_at"] == removed["occurred_at"]
    assert created["secret"] not in json.dumps(audit)
    status, _, only = await api.get(f"/v1/audit?org_id={org}&event_type=WebhookRemoved")
    assert status == 200 and [e["event_id"] for e in only["data"]] == [removed["event_id"]]

    # Every consumer of the log takes them: nothing set aside, no key row, the chain holds.
    app = client.app[KEYLEDGER]
    assert await app.feed.wait_for(removed["position"], 10)
    assert await app.projections.wait_for("key_views", removed["position"], within=10)
    assert webhook_id not in app.index.quarantined and app.index.by_key_id(webhook_id) is None
    assert await pool.fetchval(
        "SELECT count(*) FROM quarantined_keys WHERE key_id = $1", webhook_id
    ) == 0  # fmt: skip
    assert await pool.fetchval("SELECT count(*) FROM key_views WHERE key_id = $1", webhook_id) == 0
    status, _, keys = await api.get(f"/v1/orgs/{org}/keys?min_position={removed['position']}")
    assert (status, keys["data"]) == (200, [])
    status, _, verified = await api.get("/v1/audit/verify")
    assert status == 200 and verified["ok"], verified
    # The event stream resumes through them like through any event, without the secret.
    reader = await open_stream(client, api.service_key, org, str(registered["position"] - 1))
    try:
        streamed = [await reader.next(), await reader.next()]
    finally:
        reader.response.close()
    assert [(e.event, e.json()["data"]) for e in streamed] == [
        ("WebhookRegistered", registered["data"]),
        ("WebhookRemoved", removed["data"]),
    ]
    assert created["secret"] not in streamed[0].data


async def test_a_registration_reaches_the_live_event_stream(api: Api, client: TestClient) -> None:
    org = new_org()
    reader = await open_stream(client, api.service_key, org)
    try:
        _, _, created = await api.post(f"/v1/orgs/{org}/webhooks", {"url": "https://a.example/h"})
        live = await reader.next()
    finally:
        reader.response.close()
    assert (live.event, live.json()["key_id"]) == ("WebhookRegistered", created["webhook"]["id"])


async def test_a_caller_without_audit_read_sees_no_endpoint_in_its_stream(
    api: Api, client: TestClient, settings: Settings
) -> None:
    """Endpoints (their URLs) are listed only to ``audit:read``; the stream needs less."""
    org = new_org()
    narrow = await service_key(client, settings, ["keys:read"])
    for key in (narrow, api.service_key):
        reader = await open_stream(client, key, org, last_event_id="0")
        try:
            status, _, _ = await api.post(
                f"/v1/orgs/{org}/webhooks", {"url": "https://b.example/h"}
            )
            assert status == 201
            status, _, made = await api.post(
                f"/v1/orgs/{org}/keys", {"name": "k", "type": "secret"}
            )
            assert status == 201
            seen = [await reader.next()]
            while seen[-1].json()["key_id"] != made["key"]["id"]:
                seen.append(await reader.next())
        finally:
            reader.response.close()
        kinds = {message.event for message in seen}
        if key == narrow:
            assert "WebhookRegistered" not in kinds, kinds
        else:
            assert "WebhookRegistered" in kinds, kinds


def _cli_verify(url: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "service.cli.main", "audit", "verify"],
        env={**os.environ, "KEYLEDGER_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


async def test_webhook_events_are_published_and_never_delivered(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> None:
    org = new_org()
    async with (
        running_receiver() as receiver,
        webhook_app(postgres_server_url, settings, nats_url) as app,
        jetstream(nats_url) as js,
    ):
        webhook_id, _ = await register(app, org, receiver.url("/hook"))
        other, _ = await register(app, org, receiver.url("/other"))
        await call(app.client, app, "DELETE", f"/v1/orgs/{org}/webhooks/{other}")
        created = await call(
            app.client, app, "POST", f"/v1/orgs/{org}/keys", {"name": "a", "type": "secret"}
        )
        key_id = created["key"]["id"]

        async def key_delivered() -> bool:
            return len(receiver.delivered("/hook")) >= 1

        await eventually(key_delivered, what="the key's event delivered")
        relay = app.client.app[KEYLEDGER].relay
        assert relay is not None

        async def relayed() -> bool:
            return relay.published_position >= created["position"]

        await eventually(relayed, what="everything published")
        stream = app.client.app[KEYLEDGER].settings.nats_stream
        published = [decode(msg.data) for msg in await stream_messages(js, stream)]
        webhook_events = [
            (envelope.key_id, type(event)) for envelope, event in published
            if isinstance(event, WebhookRegistered | WebhookRemoved)
        ]  # fmt: skip
        assert webhook_events == [
            (webhook_id, WebhookRegistered),
            (other, WebhookRegistered),
            (other, WebhookRemoved),
        ]
        subjects = {msg.subject for msg in await stream_messages(js, stream)}
        prefix = app.client.app[KEYLEDGER].settings.nats_subject_prefix
        assert f"{prefix}.{org}.{other}.WebhookRemoved" in subjects

        # The endpoints saw their org's key event, not the registrations or the removal
        # (the removed one may have: its consumer stops within the refresh period).
        hook = [item.envelope["key_id"] for item in receiver.received if item.path == "/hook"]
        assert hook == [key_id]
        assert {item.envelope["event_type"] for item in receiver.received} == {"KeyGenerated"}
        report = await asyncio.to_thread(_cli_verify, app.database_url)
        assert report["ok"] and report["events"] >= 4, report


async def test_an_endpoint_registered_before_endpoints_had_events_is_removed_by_one(
    api: Api, client: TestClient, pool: asyncpg.Pool
) -> None:
    org = new_org()
    webhook_id = new_webhook_id()
    # As migration 0080 leaves an endpoint registered before it: a row, no event.
    await pool.execute(
        "INSERT INTO webhook_endpoints (webhook_id, org_id, url, event_types, created_at,"
        " created_by) VALUES ($1, $2, 'https://a.example/old', '{}', now(), $3)",
        webhook_id,
        org,
        '{"id": "cli:admin"}',
    )
    await pool.execute(
        "INSERT INTO webhook_secrets (webhook_id, sealed_secret) VALUES ($1, '\\x00')", webhook_id
    )
    path = f"/v1/orgs/{org}/webhooks/{webhook_id}"
    for _ in range(2):  # the second removal writes nothing
        response = await client.delete(path, headers=api.headers())
        assert response.status == 200
    _, _, audit = await api.get(f"/v1/audit?org_id={org}")
    assert [(e["event_type"], e["key_id"], e["stream_version"]) for e in audit["data"]] == [
        ("WebhookRemoved", webhook_id, 1)
    ]
    _, _, one = await api.get(path)
    assert one["webhook"]["created_by"]["id"] == "cli:admin"
    assert one["webhook"]["removed_by"] == audit["data"][0]["actor"]
