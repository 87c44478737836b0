"""Poison events in the log quarantine their key; key_views, the index and readiness go on.

Every test runs an app on a database of its own: the poison written here
must not make other tests' ``/readyz`` degraded.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from bench.support import migrated_database
from projections.key_views import KeyViews
from projections.rebuild import rebuild
from projections.runner import ProjectionRunner
from service.http import response_shapes as shapes
from service.http.app import create_app
from service.http.context import KEYLEDGER
from service.outbox.relay import relay_consumer
from service.settings import Settings
from service.store.event_store import EventStore, LoggedEvent
from service.store.quarantine import INDEX_CONSUMER, QuarantineLog
from tests.support.api import Api, new_org
from tests.support.event_log import append_key
from tests.support.outbox import eventually
from tests.support.poison import (
    Injected,
    IsolatedApp,
    generated_data,
    inject,
    isolated_app,
    isolated_app_with_relay,
    nested,
)

store = EventStore()
quarantine = QuarantineLog()

# Each is a KeyGenerated (or an event of a key never generated) that no consumer can apply.
POISONS: dict[str, dict[str, Any]] = {
    "NUL in the name": {"data": generated_data(name="a\u0000b")},
    "lone surrogate in the name": {"data": json.dumps(generated_data(name="a\ud800b"))},
    "unknown event type": {"event_type": "KeyTeleported", "data": {"to": "mars"}},
    "missing fields": {"data": {"name": "no type, no environment"}},
    "data not an object": {"data": "[1, 2, 3]"},
    "metadata not an object": {"data": generated_data(metadata=[1])},
    "unknown key type": {"data": generated_data(type="teleporter")},
    "rename of a key never generated": {
        "event_type": "KeyRenamed",
        "data": {"name": "n", "previous_name": "p"},
    },
    "timestamp past year 9999": {"occurred_at": "10000-01-01T00:00:00Z"},
}
# What the index takes in its stride: it keeps these in memory, it never writes a row.
INDEX_TOLERATES = {"NUL in the name", "lone surrogate in the name"}


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def _head(pool: asyncpg.Pool) -> int:
    async with pool.acquire() as conn:
        return await store.head(conn)


async def _quarantined(pool: asyncpg.Pool, consumer: str) -> dict[str, int]:
    async with pool.acquire() as conn:
        return {k: e.position for k, e in (await quarantine.of_consumer(conn, consumer)).items()}


async def _caught_up(app: IsolatedApp) -> int:
    head = await _head(app.pool)
    assert await app.client.app[KEYLEDGER].projections.wait_for("key_views", head, within=20)
    assert await app.client.app[KEYLEDGER].verifier.feed.wait_for(head, within=20)
    return head


async def _verify(api: Api, secret: str) -> str:
    status, _, verdict = await api.post("/v1/verify", {"key": secret})
    assert status == 200
    return verdict["code"]


async def _poison_interleaved(app: IsolatedApp, api: Api, org: str) -> tuple[list, dict]:
    good: list[dict[str, Any]] = []
    poisoned: dict[str, Injected] = {}
    for label, kwargs in POISONS.items():
        good.append(await api.generate(org, name=f"before {label}"))
        async with app.pool.acquire() as conn:
            poisoned[label] = await inject(conn, org, **kwargs)
    good.append(await api.generate(org, name="after all of them"))
    return good, poisoned


async def test_poison_events_are_set_aside_and_everything_else_flows(
    postgres_server_url: str, settings: Settings
) -> None:
    async with isolated_app(postgres_server_url, settings) as app:
        api = Api(app.client, app.admin_key)
        org = new_org()
        good, poisoned = await _poison_interleaved(app, api, org)
        # A revocation behind all the poison still takes effect everywhere.
        revoked = good[0]
        await api.post(f"/v1/orgs/{org}/keys/{revoked['key']['id']}/revoke", {"reason": "leaked"})
        await _caught_up(app)

        # key_views: every good key is there, every poisoned key set aside at its event.
        status, _, page = await api.get(f"/v1/orgs/{org}/keys?limit=100")
        assert status == 200
        listed = {key["id"]: key["status"] for key in page["data"]}
        assert listed == {k["key"]["id"]: "revoked" if k is revoked else "active" for k in good}
        expected = {p.key_id: p.position for p in poisoned.values()}
        assert await _quarantined(app.pool, "key_views") == expected
        assert app.client.app[KEYLEDGER].projections.failures() == {}

        # The index: every good key verifies, the revocation holds; it set aside what it
        # could not apply, and keeps what it can hold in memory.
        for key in good[1:]:
            assert await _verify(api, key["secret"]) == "VALID"
        assert await _verify(api, revoked["secret"]) == "REVOKED"
        index_expected = {
            p.key_id: p.position for label, p in poisoned.items() if label not in INDEX_TOLERATES
        }

        async def index_recorded() -> bool:
            return await _quarantined(app.pool, INDEX_CONSUMER) == index_expected

        await eventually(index_recorded, what="the index's quarantines in PostgreSQL")
        assert set(app.client.app[KEYLEDGER].verifier.index.quarantined) == set(index_expected)

        # /readyz: still 200, degraded, naming each key; /metrics counts them per consumer.
        response = await app.client.get("/readyz")
        body = await response.json()
        assert response.status == 200, body
        assert body["status"] == "degraded"
        assert f"quarantine: key_views has set aside {len(POISONS)} key(s)" in body["degraded"]
        named = {(q["consumer"], q["key_id"], q["position"]) for q in body["quarantined"]}
        assert {("key_views", p.key_id, p.position) for p in poisoned.values()} <= named
        assert "reason" not in json.dumps(body["quarantined"])
        metrics = _samples(await (await app.client.get("/metrics")).text())
        assert metrics[("keyledger_quarantined_keys", (("consumer", "key_views"),))] == len(POISONS)
        assert metrics[("keyledger_quarantined_keys", (("consumer", INDEX_CONSUMER),))] == len(
            index_expected
        )
        assert metrics[("keyledger_ready", ())] == 1
        assert metrics[("keyledger_degraded", ())] == 1

        # The key's view says so: folded from the log when key_views has no row for it,
        # a 409 naming the quarantine when not even the log folds.
        nul = poisoned["NUL in the name"]
        status, _, key = await api.get(f"/v1/orgs/{org}/keys/{nul.key_id}")
        assert status == 200
        assert key["name"] == "a\u0000b"
        assert key["quarantined"]["key_views"]["position"] == nul.position
        assert "CharacterNotInRepertoire" in key["quarantined"]["key_views"]["reason"]
        shapes.Key.model_validate(key)
        unknown = poisoned["unknown event type"]
        status, _, error = await api.get(f"/v1/orgs/{org}/keys/{unknown.key_id}")
        assert (status, error["error"]["code"]) == (409, "key_quarantined")
        assert set(error["error"]["details"]["quarantined"]) == {"key_views", INDEX_CONSUMER}
        # Another org never learns about it.
        status, _, _ = await api.get(f"/v1/orgs/{new_org()}/keys/{unknown.key_id}")
        assert status == 404


async def test_a_later_poison_event_freezes_that_key_alone(
    postgres_server_url: str, settings: Settings
) -> None:
    async with isolated_app(postgres_server_url, settings) as app:
        api = Api(app.client, app.admin_key)
        org = new_org()
        victim = await api.generate(org, name="victim")
        bystander = await api.generate(org, name="bystander")
        victim_id = victim["key"]["id"]
        async with app.pool.acquire() as conn:
            # key_views cannot store this name; the index can hold it.
            renamed = await inject(
                conn,
                org,
                event_type="KeyRenamed",
                key_id=victim_id,
                stream_version=2,
                data={"name": "x\u0000y", "previous_name": "victim"},
            )
        head = await _caught_up(app)
        assert await _quarantined(app.pool, "key_views") == {victim_id: renamed.position}
        assert await _verify(api, victim["secret"]) == "VALID"
        async with app.pool.acquire() as conn:
            # Neither can decode this one: the index sets the key aside too.
            disabled = await inject(
                conn,
                org,
                event_type="KeyDisabled",
                key_id=victim_id,
                stream_version=3,
                data={"reason": {"not": "a string"}},
            )
        await api.post(f"/v1/orgs/{org}/keys/{bystander['key']['id']}/disable")
        head = await _caught_up(app)
        # Fails closed, from the index and from the database fallback alike.
        assert await _verify(api, victim["secret"]) == "NOT_FOUND"
        status, _, verdict = await api.post(
            "/v1/verify", {"key": victim["secret"], "min_position": head}
        )
        assert verdict["code"] == "NOT_FOUND"
        assert await _verify(api, bystander["secret"]) == "DISABLED"
        # The view keeps its last good row and says which consumers set it aside, and where.
        status, _, key = await api.get(f"/v1/orgs/{org}/keys/{victim_id}")
        assert status == 200
        assert (key["name"], key["version"], key["status"]) == ("victim", 1, "active")
        assert key["quarantined"]["key_views"]["position"] == renamed.position
        assert key["quarantined"][INDEX_CONSUMER]["position"] == disabled.position
        assert key["quarantined"][INDEX_CONSUMER]["event_type"] == "KeyDisabled"
        shapes.Key.model_validate(key)

        # A replica started now loads the same log: it sets the key aside again, ready.
        replica_app = create_app(settings.replace(database_url=app.database_url))
        async with TestClient(TestServer(replica_app)) as replica:
            on_replica = Api(replica, app.admin_key)
            assert await _verify(on_replica, victim["secret"]) == "NOT_FOUND"
            assert await _verify(on_replica, bystander["secret"]) == "DISABLED"
            assert victim_id in replica.app[KEYLEDGER].verifier.index.quarantined
            response = await replica.get("/readyz")
            assert response.status == 200
            assert (await response.json())["status"] == "degraded"


class Fussy:
    """A projection (into ``fussy_applied``) that refuses some keys for good and fails
    once, like an outage, on others."""

    table = None

    def __init__(self, name: str, refused: set[str], flaky: set[str]) -> None:
        self.name = name
        self.refused = refused
        self.flaky = set(flaky)

    async def apply(self, conn: asyncpg.Connection, events: Sequence[LoggedEvent]) -> None:
        for logged in events:
            if logged.event.key_id in self.refused:
                raise ValueError("this projection cannot hold that key")
            if logged.event.key_id in self.flaky:
                self.flaky.discard(logged.event.key_id)
                raise ConnectionResetError("the database went away")
            await conn.execute("INSERT INTO fussy_applied VALUES ($1)", logged.position)

    def on_table(self, table: str) -> Fussy:
        return self

    async def flush(self, conn: asyncpg.Connection) -> None:
        return None

    async def carry_over(self, conn: asyncpg.Connection, old_table: str, new_table: str) -> None:
        return None


@pytest.fixture
async def bare_database(postgres_server_url: str) -> Any:
    async with migrated_database(postgres_server_url, prefix="keyledger_poison") as made:
        yield made


async def test_any_projection_quarantines_what_it_refuses_but_retries_an_outage(
    bare_database: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = bare_database
    org = new_org()
    async with pool.acquire() as conn:
        keys = [await append_key(conn, org, f"k{i}") for i in range(6)]
        await conn.execute("CREATE TABLE fussy_applied (position bigint PRIMARY KEY)")
    refused, flaky = {keys[1].key_id, keys[4].key_id}, {keys[2].key_id}
    fussy = Fussy("fussy_test", refused, flaky)
    runner = ProjectionRunner(pool, url, [fussy], batch_size=4, fallback_poll_seconds=30)
    await runner.start()
    try:
        assert await runner.wait_for(fussy.name, keys[-1].position, within=20)
    finally:
        await runner.stop()
    async with pool.acquire() as conn:
        applied = [r["position"] for r in await conn.fetch("SELECT position FROM fussy_applied")]
    assert sorted(applied) == [k.position for k in keys if k.key_id not in refused]
    assert not fussy.flaky  # the outage was met, and retried rather than quarantined
    assert await _quarantined(pool, fussy.name) == {
        k.key_id: k.position for k in keys if k.key_id in refused
    }
    assert runner.failures() == {}


async def test_a_restarted_runner_keeps_skipping_a_quarantined_key(
    bare_database: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = bare_database
    org = new_org()
    async with pool.acquire() as conn:
        victim = await append_key(conn, org, "victim")
        await inject(
            conn,
            org,
            event_type="KeyRenamed",
            key_id=victim.key_id,
            stream_version=2,
            data={"name": "\u0000", "previous_name": "victim"},
        )
        after = await append_key(conn, org, "after")
    runner = ProjectionRunner(pool, url, [KeyViews()], fallback_poll_seconds=30)
    await runner.start()
    try:
        assert await runner.wait_for("key_views", after.position, within=20)
    finally:
        await runner.stop()
    async with pool.acquire() as conn:
        # A clean rename now: applied on top of the stale row it would make a lie.
        await inject(
            conn,
            org,
            event_type="KeyRenamed",
            key_id=victim.key_id,
            stream_version=3,
            data={"name": "clean", "previous_name": "\u0000"},
        )
        last = await append_key(conn, org, "last")
    successor = ProjectionRunner(pool, url, [KeyViews()], fallback_poll_seconds=30)
    await successor.start()
    try:
        assert await successor.wait_for("key_views", last.position, within=20)
    finally:
        await successor.stop()
    async with pool.acquire() as conn:
        rows = {row["key_id"]: row for row in await KeyViews().all_rows(conn)}
    assert (rows[victim.key_id]["name"], rows[victim.key_id]["version"]) == ("victim", 1)
    assert {after.key_id, last.key_id} <= set(rows)
    assert successor.failures() == {}


@pytest.mark.parametrize("hold_limit", [2, 100_000], ids=["flushing often", "one flush"])
async def test_a_rebuild_quarantines_instead_of_failing(
    postgres_server_url: str, settings: Settings, hold_limit: int
) -> None:
    async with isolated_app(postgres_server_url, settings) as app:
        api = Api(app.client, app.admin_key)
        org = new_org()
        good, poisoned = await _poison_interleaved(app, api, org)
        await _caught_up(app)
        async with app.pool.acquire() as conn:
            live = await KeyViews().all_rows(conn)
            # A stale quarantine of a good key: a rebuild gives every key another chance.
            await conn.execute(
                """INSERT INTO quarantined_keys (consumer, key_id, org_id, position, event_type,
                       reason) VALUES ('key_views', $1, $2, 1, 'KeyGenerated', 'old')""",
                good[0]["key"]["id"],
                org,
            )
        report = await rebuild(app.pool, KeyViews(hold_limit=hold_limit), batch_size=3)
        assert report.quarantined == len(POISONS)
        async with app.pool.acquire() as conn:
            rebuilt = await KeyViews().all_rows(conn)
        assert {r["key_id"] for r in rebuilt} == {r["key_id"] for r in live}
        assert set(await _quarantined(app.pool, "key_views")) == {
            p.key_id for p in poisoned.values()
        }
        # The live runner goes on after the swap, with the rebuilt quarantine.
        await api.generate(new_org(), name="after the rebuild")
        await _caught_up(app)
        assert app.client.app[KEYLEDGER].projections.failures() == {}


async def test_with_nats_the_relay_and_index_feed_go_on_past_poison(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> None:
    async with isolated_app_with_relay(postgres_server_url, settings, nats_url) as (
        app,
        _,
        stream,
    ):
        api = Api(app.client, app.admin_key)
        org = new_org()
        victim = await api.generate(org, name="to be revoked")
        async with app.pool.acquire() as conn:
            # NATS cannot carry this one; the index takes it from PostgreSQL.
            newline = await inject(conn, "nl\n")
            # JetStream carries this one, but it is too deep for the index to decode
            # from NATS: the index reads it from PostgreSQL instead.
            deep = await inject(conn, org, data=generated_data(metadata=nested(300)))
            unknown = await inject(conn, org, event_type="KeyTeleported", data={})
        await api.post(f"/v1/orgs/{org}/keys/{victim['key']['id']}/revoke", {"reason": "leaked"})
        after = await api.generate(org, name="after")
        relay = app.client.app[KEYLEDGER].relay
        head = await _caught_up(app)

        async def relayed() -> bool:
            return relay.published_position >= head

        await eventually(relayed, what="the relay to catch up")
        assert await _verify(api, victim["secret"]) == "REVOKED"
        assert await _verify(api, after["secret"]) == "VALID"
        index = app.client.app[KEYLEDGER].verifier.index
        assert index.by_key_id(deep.key_id) is not None
        assert index.by_key_id(newline.key_id) is not None
        assert set(index.quarantined) == {unknown.key_id}
        relay_name = relay_consumer(stream.nats_stream)
        assert await _quarantined(app.pool, relay_name) == {newline.key_id: newline.position}
        response = await app.client.get("/readyz")
        body = await response.json()
        assert response.status == 200 and body["status"] == "degraded", body
        assert f"quarantine: {relay_name} has set aside 1 key(s)" in body["degraded"]


async def test_the_rebuild_command_succeeds_on_a_poisoned_log(
    bare_database: tuple[str, asyncpg.Pool],
) -> None:
    url, pool = bare_database
    org = new_org()
    async with pool.acquire() as conn:
        good = [await append_key(conn, org, "good")]
        poisoned = [await inject(conn, org, **POISONS[label]) for label in sorted(POISONS)[:4]]
        good.append(await append_key(conn, org, "also good"))
    env = {**os.environ, "KEYLEDGER_DATABASE_URL": url, "KEYLEDGER_LOG_LEVEL": "error"}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service.cli.main", "projections", "rebuild", "key_views"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith(f"; {len(poisoned)} key(s) quarantined")
    async with pool.acquire() as conn:
        rows = {row["key_id"] for row in await KeyViews().all_rows(conn)}
    assert {k.key_id for k in good} <= rows
    assert set(await _quarantined(pool, "key_views")) == {p.key_id for p in poisoned}


async def test_a_quarantine_never_repeats_a_secret(
    postgres_server_url: str, settings: Settings, captured_logs: io.StringIO
) -> None:
    secret = "sk_live_" + "S3cr3t" * 9
    before = len(captured_logs.getvalue())
    async with isolated_app(postgres_server_url, settings) as app:
        api = Api(app.client, app.admin_key)
        org = new_org()
        async with app.pool.acquire() as conn:
            cases = [
                # pydantic would echo the input; a reason never does
                await inject(conn, org, event_type="KeyRevoked", data={"reason": secret}),
                # asyncpg echoes the argument it cannot encode
                await inject(conn, org, data=json.dumps(generated_data(name=secret + "\ud800"))),
                # the database refuses the row
                await inject(conn, org, data=generated_data(hint=secret + "\u0000")),
            ]
        await _caught_up(app)
        assert set(await _quarantined(app.pool, "key_views")) == {c.key_id for c in cases}
        async with app.pool.acquire() as conn:
            reasons = await conn.fetch("SELECT reason FROM quarantined_keys")
        views = [await api.get(f"/v1/orgs/{org}/keys/{c.key_id}") for c in cases]
    logged = captured_logs.getvalue()[before:]
    assert "event_quarantined" in logged
    assert secret not in logged
    assert all(secret not in row["reason"] for row in reasons)
    shown = [
        body.get("quarantined") or body["error"]["details"]["quarantined"] for _, _, body in views
    ]
    assert all(shown) and secret not in json.dumps(shown)
