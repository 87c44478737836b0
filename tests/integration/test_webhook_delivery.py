"""Webhook deliveries to a real HTTP receiver, through real PostgreSQL and JetStream.

The receiver fails then recovers, is down for a while, and the delivering
replica dies mid-delivery: every event arrives, signed, in order per key,
and a duplicate (only after the death) carries the same Keyledger-Event-Id.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.clock import utc_now
from service.http.context import KEYLEDGER
from service.settings import Settings
from tests.support.api import new_org
from tests.support.outbox import deleted_at_exit, eventually, jetstream, unique_stream_settings
from tests.support.poison import IsolatedApp, isolated_app, isolated_app_with_relay
from tests.support.receiver import Receiver, running_receiver
from tests.support.replicas import in_process_replica

# Seconds, not hours: the same schedule, scaled down.
FAST = {
    "webhooks_allow_private": True,
    "webhook_retry_base_seconds": 0.05,
    "webhook_retry_max_seconds": 0.3,
    "webhook_refresh_seconds": 0.1,
    "webhook_timeout_seconds": 1.0,
}


@contextlib.asynccontextmanager
async def webhook_app(
    server_url: str, settings: Settings, nats_url: str, **changes: object
) -> AsyncIterator[IsolatedApp]:
    async with isolated_app_with_relay(
        server_url, settings.replace(**FAST | changes), nats_url
    ) as (app, _, _):
        yield app


async def call(
    client: TestClient, app: IsolatedApp, method: str, path: str, body: Any = None
) -> Any:
    response = await client.request(method, path, json=body, headers=app.headers())
    payload = await response.json()
    assert response.status < 300, payload
    return payload


async def register(
    app: IsolatedApp, org: str, url: str, event_types: list[str] | None = None
) -> tuple[str, str]:
    body: dict[str, Any] = {"url": url}
    if event_types is not None:
        body["event_types"] = event_types
    payload = await call(app.client, app, "POST", f"/v1/orgs/{org}/webhooks", body)
    return payload["webhook"]["id"], payload["secret"]


async def key_history(app: IsolatedApp, org: str, client: TestClient | None = None) -> None:
    """Two keys: generate, rename, revoke the first; generate the second."""
    client = client or app.client
    first = await call(client, app, "POST", f"/v1/orgs/{org}/keys", {"name": "a", "type": "secret"})
    key_id = first["key"]["id"]
    await call(client, app, "POST", f"/v1/orgs/{org}/keys/{key_id}/rename", {"name": "b"})
    await call(client, app, "POST", f"/v1/orgs/{org}/keys/{key_id}/revoke", {"reason": "leaked"})
    await call(client, app, "POST", f"/v1/orgs/{org}/keys", {"name": "c", "type": "secret"})


async def logged_events(app: IsolatedApp, org: str) -> list[tuple[str, str, str]]:
    """(event_id, key_id, event_type) of the org's events, in log order."""
    rows = await app.pool.fetch(
        "SELECT event_id, key_id, event_type FROM events WHERE org_id = $1 ORDER BY position", org
    )
    return [(str(r["event_id"]), r["key_id"], r["event_type"]) for r in rows]


def assert_all_once_in_order(receiver: Receiver, path: str, logged: list[tuple[str, str, str]]):
    """Every event delivered (2xx) exactly once, in log order (so in order per key)."""
    delivered = [item.event_id for item in receiver.delivered(path)]
    assert delivered == [event_id for event_id, _, _ in logged]
    for item in receiver.delivered(path):
        assert item.envelope["event_id"] == item.event_id


async def all_delivered(receiver: Receiver, path: str, count: int) -> None:
    async def done() -> bool:
        return len(receiver.delivered(path)) >= count

    await eventually(done, what=f"{count} deliveries on {path}")


async def test_a_failing_receiver_recovers_and_gets_every_event_in_order(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> None:
    org = new_org()
    # The first three requests fail (500), then the receiver recovers.
    async with (
        running_receiver(answers={"/flaky": lambda n: 500 if n < 3 else 204}) as receiver,
        webhook_app(postgres_server_url, settings, nats_url) as app,
    ):
        webhook_id, secret = await register(app, org, receiver.url("/flaky"))
        revocations, _ = await register(app, org, receiver.url("/revoked"), ["KeyRevoked"])
        await key_history(app, org)
        logged = await logged_events(app, org)
        await all_delivered(receiver, "/flaky", len(logged))
        await all_delivered(receiver, "/revoked", 1)

        assert_all_once_in_order(receiver, "/flaky", logged)
        assert receiver.all_signed_by(secret, "/flaky")
        assert not receiver.all_signed_by("whsec_wrong", "/flaky")
        # Only the first event was retried: the first three requests carried it.
        flaky = [item for item in receiver.received if item.path == "/flaky"]
        assert {item.event_id for item in flaky[:3]} == {logged[0][0]}
        assert [item.envelope["event_type"] for item in receiver.delivered("/revoked")] == [
            "KeyRevoked"
        ]

        deliveries = await call(
            app.client, app, "GET", f"/v1/orgs/{org}/webhooks/{webhook_id}/deliveries"
        )
        attempts = [d for d in deliveries["data"] if d["event_id"] == logged[0][0]]
        assert [(a["attempt"], a["outcome"]) for a in reversed(attempts)] == [
            (1, "failed"),
            (2, "failed"),
            (3, "failed"),
            (4, "delivered"),
        ]
        assert attempts[-1]["status_code"] == 500
        assert "sk_live" not in str(deliveries)  # the receiver's answer is never kept
        assert revocations != webhook_id


async def test_a_receiver_down_for_a_while_gets_everything_after(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> None:
    org = new_org()
    async with (
        running_receiver() as receiver,
        webhook_app(postgres_server_url, settings, nats_url) as app,
    ):
        webhook_id, _ = await register(app, org, receiver.url("/hook"))
        await receiver.stop()  # nothing listens on its port now
        await key_history(app, org)
        logged = await logged_events(app, org)

        async def refused_twice() -> bool:
            count = await app.pool.fetchval(
                "SELECT count(*) FROM webhook_deliveries WHERE webhook_id = $1"
                " AND outcome = 'failed' AND error LIKE 'connection failed%'",
                webhook_id,
            )
            return bool(count >= 2)

        await eventually(refused_twice, what="failed attempts while the receiver is down")
        await receiver.start()
        await all_delivered(receiver, "/hook", len(logged))
        assert_all_once_in_order(receiver, "/hook", logged)


async def test_an_event_failing_for_too_long_is_dead_lettered_and_the_next_goes_on(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> None:
    org = new_org()
    async with (
        running_receiver(answers={"/picky": lambda n: 500 if n < 4 else 200}) as receiver,
        webhook_app(postgres_server_url, settings, nats_url, webhook_retry_for_seconds=0.01) as app,
    ):
        webhook_id, _ = await register(app, org, receiver.url("/picky"))
        await key_history(app, org)
        logged = await logged_events(app, org)

        async def settled() -> bool:
            count = await app.pool.fetchval(
                "SELECT count(DISTINCT event_id) FROM webhook_deliveries WHERE webhook_id = $1"
                " AND outcome <> 'failed'",
                webhook_id,
            )
            return bool(count == len(logged))

        await eventually(settled, what="every event delivered or dead-lettered")
        outcomes = await app.pool.fetch(
            "SELECT event_id, outcome FROM webhook_deliveries WHERE webhook_id = $1"
            " AND outcome <> 'failed'",
            webhook_id,
        )
        dead = {str(r["event_id"]) for r in outcomes if r["outcome"] == "dead_lettered"}
        assert logged[0][0] in dead  # it failed past the (tiny) retry window
        # The events after it were not held back for ever.
        assert [item.event_id for item in receiver.delivered("/picky")] == [
            event_id for event_id, _, _ in logged if event_id not in dead
        ]


async def test_a_replica_dying_mid_delivery_loses_nothing(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> None:
    org = new_org()
    stream = unique_stream_settings(settings.replace(**FAST))
    async with (
        jetstream(nats_url) as js,
        deleted_at_exit(js, stream.nats_stream),
        running_receiver(hold={"/hook"}) as receiver,
        # Takes commands; delivers nothing (no NATS): the two replicas below do.
        isolated_app(postgres_server_url, settings.replace(**FAST)) as app,
    ):
        replica = stream.replace(database_url=app.database_url, nats_url=nats_url)
        async with contextlib.AsyncExitStack() as first_stack:
            first = await first_stack.enter_async_context(in_process_replica(replica))
            dispatcher = first.app[KEYLEDGER].dispatcher
            assert dispatcher is not None

            async def leads() -> bool:
                return dispatcher.is_leader

            await eventually(leads, what="the first replica leading")
            async with in_process_replica(replica) as second:
                webhook_id, secret = await register(app, org, receiver.url("/hook"))
                await key_history(app, org)
                logged = await logged_events(app, org)
                await receiver.arrived.wait()  # the first delivery is in flight…
                await first_stack.aclose()  # …when its replica goes away
                receiver.release.set()
                await all_delivered(receiver, "/hook", len(logged))
                assert second.app[KEYLEDGER].dispatcher is not None

        assert_all_once_in_order(receiver, "/hook", logged)
        # The cut-short delivery came again, with the same event id.
        assert receiver.received[0].event_id == logged[0][0]
        assert receiver.received[0].event_id == receiver.delivered("/hook")[0].event_id
        assert receiver.all_signed_by(secret, "/hook")
        assert webhook_id.startswith("wh_")


@pytest.mark.parametrize("path", ["/v1/orgs/{org}/webhooks"])
async def test_a_removed_endpoint_gets_nothing_more(
    postgres_server_url: str, settings: Settings, nats_url: str, path: str
) -> None:
    org = new_org()
    async with (
        running_receiver() as receiver,
        webhook_app(postgres_server_url, settings, nats_url) as app,
    ):
        webhook_id, _ = await register(app, org, receiver.url("/hook"))
        await call(app.client, app, "POST", f"/v1/orgs/{org}/keys", {"name": "a", "type": "secret"})
        await all_delivered(receiver, "/hook", 1)
        removed = await call(app.client, app, "DELETE", f"{path.format(org=org)}/{webhook_id}")
        assert removed["webhook"]["removed_at"] is not None
        dispatcher = app.client.app[KEYLEDGER].dispatcher
        assert dispatcher is not None

        async def dropped() -> bool:
            return dispatcher.describe()["endpoints"] == 0

        await eventually(dropped, what="the removed endpoint's consumer stopped")
        await call(app.client, app, "POST", f"/v1/orgs/{org}/keys", {"name": "b", "type": "secret"})
        logged = await logged_events(app, org)
        # Wait for the relay to publish the second event, then check no consumer took it.
        relay = app.client.app[KEYLEDGER].relay
        assert relay is not None

        async def relayed() -> bool:
            return relay.published_position >= 3

        await eventually(relayed, what="the relay publishing the second key")
        assert [item.event_id for item in receiver.received] == [logged[0][0]]


async def test_expiry_warnings_reach_webhooks_like_any_event(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> None:
    org = new_org()
    async with (
        running_receiver() as receiver,
        webhook_app(postgres_server_url, settings, nats_url, expiry_warnings="29s") as app,
    ):
        await register(app, org, receiver.url("/soon"), ["KeyExpiringSoon"])
        expires_at = (utc_now() + timedelta(seconds=30)).isoformat()
        await call(
            app.client,
            app,
            "POST",
            f"/v1/orgs/{org}/keys",
            {"name": "soon", "type": "secret", "expires_at": expires_at},
        )
        await all_delivered(receiver, "/soon", 1)
        envelope = receiver.delivered("/soon")[0].envelope
        assert (envelope["event_type"], envelope["data"]["lead"]) == ("KeyExpiringSoon", "29s")
