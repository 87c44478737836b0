"""A truncated log is detected, refused and repaired (docs/security.md §6; issue 9 class 6).

The log is cut the way a superuser could: ``session_replication_role =
replica`` switches the append-only triggers off, then ``DELETE``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench.support import scratch_database
from events.models import Actor
from service.embedded import free_port
from service.http.app import create_app
from service.http.context import KEYLEDGER
from service.service_keys import issue_service_key
from service.settings import Settings
from service.store.event_store import EventStore
from service.store.log_witnesses import Witness, read_witness_report
from service.store.migrate import migrate
from tests.conftest import TEST_PEPPER
from tests.support.api import Api, indexed, new_org
from tests.support.event_log import append_key
from tests.support.outbox import deleted_at_exit, eventually, jetstream, unique_stream_settings


@pytest.fixture
async def own_database(postgres_server_url: str) -> AsyncIterator[str]:
    async with scratch_database(postgres_server_url, prefix="keyledger_truncation") as url:
        yield url


def settings_for(database_url: str, nats_url: str | None = None) -> Settings:
    base = Settings.from_env(
        {},
        database_url=database_url,
        pepper=TEST_PEPPER,
        witness_check_interval_seconds=0.2,
        expiry_sweep_interval_seconds=0.2,
    )
    return unique_stream_settings(base, nats_url=nats_url) if nats_url else base


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[TestClient]:
    async with TestClient(TestServer(create_app(settings))) as client:
        yield client


async def admin_api(client: TestClient, settings: Settings) -> Api:
    issued = await issue_service_key(
        client.app[KEYLEDGER].pool,
        settings.pepper_bytes,
        name="admin",
        scopes=["admin"],
        actor=Actor(id="t"),
    )
    await indexed(client, issued.position)
    return Api(client, issued.secret)


async def cut_log(database_url: str, keep: int) -> None:
    """Delete every event after position ``keep``, triggers bypassed."""
    conn = await asyncpg.connect(database_url)
    try:
        async with conn.transaction():
            await conn.execute("SET LOCAL session_replication_role = replica")
            await conn.execute("DELETE FROM events WHERE position > $1", keep)
    finally:
        await conn.close()


async def witnessed_everywhere(database_url: str, position: int, stream: str | None) -> None:
    """Wait until the projection (and the relay, with a stream) reached ``position``."""

    async def reached() -> bool:
        conn = await asyncpg.connect(database_url)
        try:
            projected = await conn.fetchval(
                "SELECT position FROM projection_checkpoints WHERE name = 'key_views'"
            )
            published = await conn.fetchval(
                "SELECT position FROM outbox_checkpoint WHERE stream = $1", stream
            )
        finally:
            await conn.close()
        return (projected or 0) >= position and (stream is None or (published or 0) >= position)

    await eventually(reached, what=f"position {position} to be projected and published")


async def revoked_key(api: Api, org: str) -> tuple[dict[str, Any], int]:
    """A key of ``org`` generated then revoked, and the position of its ``KeyRevoked``."""
    key = await api.generate(org)
    _, _, revoked = await api.post(
        f"/v1/orgs/{org}/keys/{key['key']['id']}/revoke", {"reason": "leaked"}
    )
    return key, revoked["position"]


def cli(args: list[str], settings: Settings) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KEYLEDGER_DATABASE_URL": settings.database_url or "",
        "KEYLEDGER_NATS_URL": settings.nats_url or "",
        "KEYLEDGER_NATS_STREAM": settings.nats_stream,
        "KEYLEDGER_NATS_SUBJECT_PREFIX": settings.nats_subject_prefix,
        "KEYLEDGER_PEPPER": TEST_PEPPER,
    }
    return subprocess.run(
        [sys.executable, "-m", "service.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def audit_verify(settings: Settings) -> tuple[int, dict[str, Any]]:
    done = await asyncio.to_thread(cli, ["audit", "verify"], settings)
    return done.returncode, json.loads(done.stdout)


async def verify_status(api: Api, secret: str) -> tuple[int, str]:
    """(status, verdict code or error code) of a verify request."""
    status, _, body = await api.post("/v1/verify", {"key": secret})
    return status, body["code"] if status == 200 else body["error"]["code"]


async def authorize_status(api: Api, secret: str) -> tuple[int, Any]:
    response = await api.client.get(
        "/v1/authorize",
        headers={"X-Keyledger-Service-Key": api.service_key, "Authorization": f"Bearer {secret}"},
    )
    return response.status, await response.json()


async def readiness(client: TestClient) -> tuple[int, list[str]]:
    response = await client.get("/readyz")
    body = await response.json()
    return response.status, body.get("problems", [])


def missing_sources(answer: dict[str, Any]) -> set[str]:
    return {w["source"].split(":")[0] for w in answer["witnesses"] if not w["held"]}


async def test_a_lost_revocation_is_refused_until_repaired_from_jetstream(
    own_database: str, nats_url: str
) -> None:
    settings = settings_for(own_database, nats_url)
    async with jetstream(nats_url) as js, deleted_at_exit(js, settings.nats_stream):
        async with running(settings) as client:
            api = await admin_api(client, settings)
            org = new_org()
            revoked_key = await api.generate(org)
            path = f"/v1/orgs/{org}/keys/{revoked_key['key']['id']}"
            _, _, revoked = await api.post(f"{path}/revoke", {"reason": "leaked"})
            other_key = await api.generate(org)
            head = other_key["position"]
            assert head == revoked["position"] + 1
            await witnessed_everywhere(own_database, head, settings.nats_stream)
            assert await verify_status(api, revoked_key["secret"]) == (200, "REVOKED")

            # The revocation and the event after it are cut off the log.
            await cut_log(own_database, keep=head - 2)

            # The running replica: not ready, verify and authorize fail closed, no writes.
            status, problems = await readiness(client)
            assert status == 503
            assert any(p.startswith("log_truncated:") for p in problems), problems
            assert await verify_status(api, revoked_key["secret"]) == (503, "log_truncated")
            assert await verify_status(api, other_key["secret"]) == (503, "log_truncated")
            status, body = await authorize_status(api, revoked_key["secret"])
            assert status == 503 and body["error"]["code"] == "log_truncated"
            new_key = {"name": "x", "type": "secret"}
            status, _, body = await api.post(f"/v1/orgs/{org}/keys", new_key)
            assert status == 503 and body["error"]["code"] == "log_truncated"
            status, _, body = await api.get("/v1/audit/verify")
            assert status == 200 and body["ok"] is False and body["log_truncated"] is True
            assert body["head"]["position"] == head - 2
            assert {"jetstream", "outbox_checkpoint", "projection", "verification_index"} <= (
                missing_sources(body)
            )

        code, answer = await audit_verify(settings)
        assert code == 1 and answer["log_truncated"] is True and answer["ok"] is False
        assert answer["reason"] == (
            f"log_truncated: the log head is position {head - 2},"
            f" but jetstream:{settings.nats_stream} saw position {head}"
        )

        # A restart does not forget: the fresh replica never answers VALID.
        async with running(settings) as client:
            api = Api(client, api.service_key)
            assert client.app[KEYLEDGER].guard.truncation is not None
            assert await verify_status(api, revoked_key["secret"]) == (503, "log_truncated")
            assert (await readiness(client))[0] == 503

            repaired = await asyncio.to_thread(cli, ["audit", "repair"], settings)
            assert repaired.returncode == 0, repaired.stderr
            assert json.loads(repaired.stdout) == {
                "head_before": head - 2,
                "head_after": head,
                "appended": 2,
            }

            async def revoked_again() -> bool:
                return await verify_status(api, revoked_key["secret"]) == (200, "REVOKED")

            await eventually(revoked_again, what="the repaired revocation to be served")
            assert await verify_status(api, other_key["secret"]) == (200, "VALID")
            assert (await readiness(client))[0] == 200
            metrics = await (await client.get("/metrics")).text()
            assert "\nkeyledger_log_truncated 0.0\n" in metrics
            status, _, body = await api.get("/v1/audit/verify")
            assert body["ok"] is True and body["events"] == head and not missing_sources(body)
            # Writes go on from the repaired head.
            assert (await api.generate(org))["position"] == head + 1

        code, answer = await audit_verify(settings)
        assert code == 0 and answer["ok"] is True and answer["events"] == head + 1
        # Repair is idempotent: nothing is missing any more.
        again = await asyncio.to_thread(cli, ["audit", "repair"], settings)
        assert again.returncode == 0 and json.loads(again.stdout)["appended"] == 0


async def test_jetstream_alone_witnesses_a_restored_backup_and_a_rewritten_head(
    own_database: str, nats_url: str
) -> None:
    settings = settings_for(own_database, nats_url)
    async with jetstream(nats_url) as js, deleted_at_exit(js, settings.nats_stream):
        async with running(settings) as client:
            api = await admin_api(client, settings)
            org = new_org()
            key, head = await revoked_key(api, org)
            await witnessed_everywhere(own_database, head, settings.nats_stream)

        # A backup from before the revocation: log and checkpoints agree with each other.
        await cut_log(own_database, keep=head - 1)
        conn = await asyncpg.connect(own_database)
        try:
            await conn.execute("UPDATE projection_checkpoints SET position = $1", head - 1)
            await conn.execute("UPDATE outbox_checkpoint SET position = $1", head - 1)
            code, answer = await audit_verify(settings)
            assert code == 1 and missing_sources(answer) == {"jetstream"}
            async with running(settings) as client:
                restarted = Api(client, api.service_key)

                async def refused() -> bool:
                    status = await verify_status(restarted, key["secret"])
                    assert status[1] != "VALID"
                    return status == (503, "log_truncated")

                await eventually(refused, what="JetStream's witness to refuse the restored log")

            # A new event takes the lost one's position: same head, another hash.
            await append_key(conn, org, "impostor")
            code, answer = await audit_verify(settings)
            assert code == 1 and answer["head"]["position"] == head
            assert f"saw another event at position {head}" in answer["reason"]

            refused = await asyncio.to_thread(cli, ["audit", "repair"], settings)
            assert refused.returncode == 1
            assert refused.stderr.strip().splitlines() == [
                f"keyledger: audit repair refused: the log's event at position {head} is not"
                " the one published to JetStream; the log was rewritten, not only cut, and"
                " repair does not overwrite"
            ]
            assert await conn.fetchval("SELECT max(position) FROM events") == head
        finally:
            await conn.close()


async def test_checkpoints_alone_witness_a_cut_while_running_and_after_a_restart(
    own_database: str, captured_logs: io.StringIO
) -> None:
    settings = settings_for(own_database)  # no NATS at all
    async with running(settings) as client:
        api = await admin_api(client, settings)
        org = new_org()
        key, head = await revoked_key(api, org)
        await witnessed_everywhere(own_database, head, None)
        await cut_log(own_database, keep=head - 1)

        # Caught by the periodic check, without any probe or audit asking.
        async def refused() -> bool:
            return await verify_status(api, key["secret"]) == (503, "log_truncated")

        await eventually(refused, what="the running replica to notice the cut")

    code, answer = await audit_verify(settings)
    assert code == 1 and missing_sources(answer) == {"projection"}
    assert answer["unchecked"] == []

    logged_before = len(captured_logs.getvalue())
    async with running(settings) as client:
        api = Api(client, api.service_key)
        assert await verify_status(api, key["secret"]) == (503, "log_truncated")
        # Said loudly at start, with the remedy.
        started = [
            json.loads(line)
            for line in captured_logs.getvalue()[logged_before:].splitlines()
            if '"event": "log_truncated"' in line
        ]
        assert started and started[0]["level"] == "critical"
        assert started[0]["remedy"] == "keyledger audit repair"
        assert started[0]["head"] == head - 1
        status, problems = await readiness(client)
        assert status == 503 and any("projection:key_views saw position" in p for p in problems)
        metrics = await (await client.get("/metrics")).text()
        assert "\nkeyledger_log_truncated 1.0\n" in metrics

    refused_repair = await asyncio.to_thread(cli, ["audit", "repair"], settings)
    assert refused_repair.returncode == 2
    assert "missing settings: KEYLEDGER_NATS_URL" in refused_repair.stderr

    # A command line that appends outside the app refuses too, and writes nothing.
    create = ["admin", "create-service-key", "--name", "late", "--scopes", "admin"]
    refused_key = await asyncio.to_thread(cli, create, settings)
    assert refused_key.returncode == 1 and "log_truncated" in refused_key.stderr
    assert refused_key.stdout == ""
    code, answer = await audit_verify(settings)
    assert code == 1 and answer["head"]["position"] == head - 1


async def test_a_repair_refuses_a_stream_that_does_not_exist(
    own_database: str, nats_url: str
) -> None:
    conn = await asyncpg.connect(own_database)
    try:
        await migrate(conn)
        await append_key(conn, new_org())
    finally:
        await conn.close()
    settings = settings_for(own_database, nats_url)
    refused = await asyncio.to_thread(cli, ["audit", "repair"], settings)
    assert refused.returncode == 1
    assert f"JetStream stream {settings.nats_stream!r} does not exist" in refused.stderr


async def test_a_head_ahead_of_its_witnesses_is_normal_lag(own_database: str) -> None:
    conn = await asyncpg.connect(own_database)
    try:
        await migrate(conn)
        org = new_org()
        envelopes = [await append_key(conn, org, f"k{i}") for i in range(4)]
        await conn.execute(
            "INSERT INTO projection_checkpoints (name, position) VALUES ('key_views', 1)"
        )
        await conn.execute("INSERT INTO outbox_checkpoint (stream, position) VALUES ('S', 3)")
        published = Witness("jetstream:S", 3, envelopes[2].hash)
        report = await read_witness_report(conn, [published, Witness("verification_index", 4)])
        assert not report.truncated and report.head == 4
        assert report.head_hash == envelopes[3].hash
        assert {w.source for w in report.witnesses} == {
            "jetstream:S",
            "verification_index",
            "outbox_checkpoint:S",
            "projection:key_views",
        }

        rewritten = Witness("jetstream:S", 2, envelopes[3].hash)
        ahead = Witness("verification_index", 5)
        report = await read_witness_report(conn, [published, rewritten, ahead])
        assert report.missing == (rewritten, ahead)

        # An empty log that a checkpoint saw grow is truncated too.
        await cut_log(own_database, keep=0)
        report = await read_witness_report(conn)
        assert report.head == 0 and {w.source for w in report.missing} == {
            "outbox_checkpoint:S",
            "projection:key_views",
        }
        assert await EventStore().head(conn) == 0
    finally:
        await conn.close()


async def test_an_unreachable_jetstream_is_named_but_does_not_fail_verify(
    own_database: str,
) -> None:
    conn = await asyncpg.connect(own_database)
    try:
        await migrate(conn)
        await append_key(conn, new_org())
    finally:
        await conn.close()
    nowhere = settings_for(own_database).replace(nats_url=f"nats://127.0.0.1:{free_port()}")
    code, answer = await audit_verify(nowhere)
    assert code == 0 and answer["ok"] is True and answer["log_truncated"] is False
    assert len(answer["unchecked"]) == 1 and answer["unchecked"][0].startswith("jetstream: ")
    # Without NATS the lost tail cannot be fetched: repair says so and writes nothing.
    refused = await asyncio.to_thread(cli, ["audit", "repair"], nowhere)
    assert refused.returncode == 2 and "cannot reach NATS" in refused.stderr


async def test_a_command_right_after_a_cut_does_not_take_a_lost_position(
    own_database: str,
) -> None:
    """Before the periodic check notices, the writer compares the head with its own index."""
    settings = settings_for(own_database).replace(witness_check_interval_seconds=3600)
    async with running(settings) as client:
        api = await admin_api(client, settings)
        org = new_org()
        first = await api.generate(org)
        second = await api.generate(org)
        await indexed(client, second["position"])
        await cut_log(own_database, keep=first["position"])

        status, _, body = await api.post(f"/v1/orgs/{org}/keys", {"name": "k", "type": "secret"})
        assert (status, body["error"]["code"]) == (503, "log_truncated")
        conn = await asyncpg.connect(own_database)
        try:
            head = await conn.fetchval("SELECT max(position) FROM events")
        finally:
            await conn.close()
        assert head == first["position"]  # the lost position stays free for the repair


async def test_after_a_restored_backup_an_event_at_a_lost_position_is_never_published(
    own_database: str, nats_url: str
) -> None:
    """A backup restore rolls the checkpoints back with the log; JetStream remembers.

    An event written onto the restored log (here below the app, as a script
    would) takes the position of a published one. The relay must not publish
    it over the stream's witness, so the truncation stays visible and the
    revoked key is never VALID again.
    """
    settings = settings_for(own_database, nats_url)
    async with jetstream(nats_url) as js, deleted_at_exit(js, settings.nats_stream):
        async with running(settings) as client:
            api = await admin_api(client, settings)
            org = new_org()
            key, lost = await revoked_key(api, org)
            await witnessed_everywhere(own_database, lost, settings.nats_stream)
            subjects = f"{settings.nats_subject_prefix}.>"
            published = (await js.get_last_msg(settings.nats_stream, subjects)).data

        # "Restore" a backup taken just before the revocation: log and checkpoints go back.
        conn = await asyncpg.connect(own_database)
        try:
            await cut_log(own_database, keep=lost - 1)
            await conn.execute("UPDATE outbox_checkpoint SET position = $1", lost - 1)
            await conn.execute("UPDATE projection_checkpoints SET position = $1", lost - 1)
            await append_key(conn, org, "written onto the restored log")  # takes `lost`
        finally:
            await conn.close()

        async with running(settings) as client:
            api = Api(client, api.service_key)
            status, code = await verify_status(api, key["secret"])
            assert status == 503 and code in ("log_truncated", "log_gap")
            relay = client.app[KEYLEDGER].relay
            assert relay is not None

            async def held_back() -> bool:
                return relay.problem is not None and "another event" in relay.problem

            await eventually(held_back, what="the relay to hold back")
            last = await js.get_last_msg(settings.nats_stream, subjects)
            assert last.data == published  # the stream still witnesses the lost revocation
            status, _ = await readiness(client)
            assert status == 503
