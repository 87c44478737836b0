"""Webhook deliveries to a real HTTP receiver, through real PostgreSQL and JetStream.

The receiver fails then recovers, is down for a while, fails for one key
only, and the delivering replica dies mid-delivery: every event arrives,
signed, in order per key (a key's failing event holds back only that key's
later events), and a duplicate (only after the death) carries the same
Keyledger-Event-Id.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from events.models import WEBHOOK_EVENT_TYPES
from service.clock import utc_now
from service.http.context import KEYLEDGER
from service.settings import Settings
from tests.support.api import new_org
from tests.support.outbox import deleted_at_exit, eventually, jetstream, unique_stream_settings
from tests.support.poison import (
    IsolatedApp,
    generated_data,
    inject,
    isolated_app,
    isolated_app_with_relay,
)
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
    """(event_id, key_id, event_type) of the org's events an endpoint is sent (not the
    endpoints' own), in log order."""
    rows = await app.pool.fetch(
        "SELECT event_id, key_id, event_type FROM events WHERE org_id = $1"
        " AND NOT (event_type = ANY($2::text[])) ORDER BY position",
        org,
        list(WEBHOOK_EVENT_TYPES),
    )
    return [(str(r["event_id"]), r["key_id"], r["event_type"]) for r in rows]


def by_key(events: list[tuple[str, str]]) -> dict[str, list[str]]:
    """(event_id, key_id) pairs as each key's event ids, in the order given."""
    keys: dict[str, list[str]] = {}
    for event_id, key_id in events:
        keys.setdefault(key_id, []).append(event_id)
    return keys


def assert_all_once_in_order_per_key(
    receiver: Receiver, path: str, logged: list[tuple[str, str, str]]
) -> None:
    """Every event delivered (2xx) exactly once, each key's in log order."""
    delivered = receiver.delivered(path)
    assert sorted(item.event_id for item in delivered) == sorted(e for e, _, _ in logged)
    assert by_key([(item.event_id, item.envelope["key_id"]) for item in delivered]) == by_key(
        [(event_id, key_id) for event_id, key_id, _ in logged]
    )
    for item in delivered:
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
        running_receiver(answers={"/flaky": lambda n, _: 500 if n < 3 else 204}) as receiver,
        webhook_app(postgres_server_url, settings, nats_url) as app,
    ):
        webhook_id, secret = await register(app, org, receiver.url("/flaky"))
        revocations, _ = await register(app, org, receiver.url("/revoked"), ["KeyRevoked"])
        await key_history(app, org)
        logged = await logged_events(app, org)
        await all_delivered(receiver, "/flaky", len(logged))
        await all_delivered(receiver, "/revoked", 1)

        assert_all_once_in_order_per_key(receiver, "/flaky", logged)
        assert receiver.all_signed_by(secret, "/flaky")
        assert not receiver.all_signed_by("whsec_wrong", "/flaky")
        # Only each key's first event was retried: the first three requests carried them
        # (the first key's later events waited for it; the second key's did not).
        flaky = [item for item in receiver.received if item.path == "/flaky"]
        firsts = {ids[0] for ids in by_key([(e, k) for e, k, _ in logged]).values()}
        assert {item.event_id for item in flaky[:3]} <= firsts
        assert logged[0][0] == flaky[0].event_id
        assert [item.envelope["event_type"] for item in receiver.delivered("/revoked")] == [
            "KeyRevoked"
        ]
        # As the event stream shows them: the secret's HMAC (and so the chain hash) stays home.
        generated = [
            item.envelope
            for item in receiver.delivered("/flaky")
            if item.envelope["event_type"] == "KeyGenerated"
        ]
        assert len(generated) == 2
        assert all("secret_hash" not in e["data"] and "hash" not in e for e in generated)

        deliveries = await call(
            app.client, app, "GET", f"/v1/orgs/{org}/webhooks/{webhook_id}/deliveries"
        )
        attempts = [d for d in deliveries["data"] if d["event_id"] == logged[0][0]]
        failed = len(attempts) - 1
        assert failed >= 1
        assert [(a["attempt"], a["outcome"]) for a in reversed(attempts)] == [
            *((n, "failed") for n in range(1, failed + 1)),
            (failed + 1, "delivered"),
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
        assert_all_once_in_order_per_key(receiver, "/hook", logged)


async def test_an_event_failing_for_too_long_is_dead_lettered_and_the_next_goes_on(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> None:
    org = new_org()
    async with (
        running_receiver(answers={"/picky": lambda n, _: 500 if n < 4 else 200}) as receiver,
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
        # The events after it were not held back for ever, and came in order per key.
        delivered = receiver.delivered("/picky")
        assert by_key([(item.event_id, item.envelope["key_id"]) for item in delivered]) == by_key(
            [(event_id, key_id) for event_id, key_id, _ in logged if event_id not in dead]
        )


async def test_a_key_failing_holds_back_only_its_own_later_events(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> None:
    org = new_org()
    down: set[str] = set()  # keys whose events the receiver refuses (503)
    answers = {"/hook": lambda _, envelope: 503 if envelope["key_id"] in down else 200}
    async with (
        running_receiver(answers=answers) as receiver,
        webhook_app(postgres_server_url, settings, nats_url) as app,
    ):
        client = app.client
        keys = f"/v1/orgs/{org}/keys"
        first = (await call(client, app, "POST", keys, {"name": "a", "type": "secret"}))["key"]
        down.add(first["id"])
        webhook_id, secret = await register(app, org, receiver.url("/hook"))
        await call(client, app, "POST", f"{keys}/{first['id']}/rename", {"name": "a2"})
        second = (await call(client, app, "POST", keys, {"name": "b", "type": "secret"}))["key"]
        await call(client, app, "POST", f"{keys}/{second['id']}/rename", {"name": "b2"})
        await call(client, app, "POST", f"{keys}/{first['id']}/rename", {"name": "a3"})
        await call(client, app, "POST", f"{keys}/{second['id']}/revoke", {"reason": "leaked"})
        registered_at = await app.pool.fetchval(
            "SELECT position FROM events WHERE key_id = $1", webhook_id
        )
        logged = [
            event for event in await logged_events(app, org)
            if await app.pool.fetchval(
                "SELECT position FROM events WHERE event_id = $1::uuid", event[0]
            ) > registered_at
        ]  # fmt: skip
        failing = [event_id for event_id, key_id, _ in logged if key_id == first["id"]]
        flowing = [event_id for event_id, key_id, _ in logged if key_id == second["id"]]
        assert (len(failing), len(flowing)) == (2, 3)

        async def retried_while_others_flow() -> bool:
            tries = [i for i in receiver.received if i.event_id == failing[0]]
            return len(tries) >= 2 and len(receiver.delivered("/hook")) >= len(flowing)

        await eventually(retried_while_others_flow, what="the other key's events delivered")
        # The other key's events all arrived, in order, while the first key's failed…
        assert [i.event_id for i in receiver.delivered("/hook")] == flowing
        # …and the first key's later event was never sent ahead of its earlier one.
        assert failing[1] not in {i.event_id for i in receiver.received}
        assert await app.pool.fetchval(
            "SELECT count(*) FROM webhook_deliveries WHERE event_id = $1::uuid", failing[1]
        ) == 0  # fmt: skip

        down.clear()  # the receiver recovers
        await all_delivered(receiver, "/hook", len(logged))
        assert_all_once_in_order_per_key(receiver, "/hook", logged)
        # Every try of the first key's events, in order: retries of the same event id, then
        # the next event once the earlier one was delivered.
        tries = [i.event_id for i in receiver.received if i.envelope["key_id"] == first["id"]]
        assert tries[-1] == failing[1] and set(tries[:-1]) == {failing[0]} and len(tries) >= 3
        assert receiver.all_signed_by(secret, "/hook")


async def test_an_event_never_published_does_not_hold_its_key_back(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> None:
    org = new_org()
    async with (
        running_receiver() as receiver,
        webhook_app(postgres_server_url, settings, nats_url) as app,
    ):
        await register(app, org, receiver.url("/hook"))
        async with app.pool.acquire() as conn:
            # Larger than NATS takes: the relay sets it aside, it never reaches the endpoint.
            poison = await inject(conn, org, data=generated_data(name="x" * 1_100_000))
        path = f"/v1/orgs/{org}/keys/{poison.key_id}/disable"
        disabled = await call(app.client, app, "POST", path, {})
        await all_delivered(receiver, "/hook", 1)
        [delivered] = receiver.delivered("/hook")
        assert (delivered.envelope["event_type"], delivered.envelope["key_id"]) == (
            "KeyDisabled",
            poison.key_id,
        )
        assert delivered.envelope["position"] == disabled["position"]


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

        assert_all_once_in_order_per_key(receiver, "/hook", logged)
        # The cut-short delivery came again, with the same event id, before its key's next.
        first_key = logged[0][1]
        assert receiver.received[0].event_id == logged[0][0]
        again = [i for i in receiver.delivered("/hook") if i.envelope["key_id"] == first_key]
        assert receiver.received[0].event_id == again[0].event_id
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
