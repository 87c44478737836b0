"""Readers and writers of the log meet rows the API could never have written (docs/security.md §5).

A damaged log, an old bug or a hand-made INSERT may hold a row whose ``actor``
or ``data`` is not a JSON object, which names an unknown event type, holds a
lone surrogate or NUL, or a timestamp past year 9999. None of them may make
any reader answer 500: ``/v1/audit`` and a key's history show the row as a
placeholder (never its data), a command on its key gets 409
``key_quarantined`` and writes nothing while its neighbours commit, and
``audit verify``, the expiry sweeper and ``events tail`` go on.

Every test runs an app on a database of its own (``tests.support.poison``).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import timedelta
from typing import Any

from events.models import Actor
from service.clock import utc_now
from service.domain import key_material
from service.domain.commands import GenerateKey
from service.domain.ids import new_key_id
from service.expiry import ExpirySweeper
from service.http import response_shapes as shapes
from service.http.context import KEYLEDGER
from service.settings import Settings
from tests.support.api import Api, new_org
from tests.support.outbox import eventually
from tests.support.poison import (
    Injected,
    IsolatedApp,
    generated_data,
    inject,
    isolated_app,
    isolated_app_with_relay,
)

SECRET = "sk_live_" + "P0isonedS3cret" * 3
ACTOR_WITH_SECRET = json.dumps({"id": SECRET})

# Rows no reader can show as an event: each is the first event of its own key.
UNREADABLE: dict[str, dict[str, Any]] = {
    "actor a JSON string": {"actor": json.dumps(SECRET)},
    "actor an array": {"actor": "[1, 2]"},
    "actor without an id": {"actor": json.dumps({"who": SECRET})},
    "data not an object": {"data": "[1, 2, 3]"},
    "data a JSON string": {"data": json.dumps(SECRET)},
    "data null": {"data": "null"},
    "unknown event type": {"event_type": "KeyTeleported", "data": {"to": SECRET}},
    "missing fields": {"data": {"name": SECRET}},
    "unknown key type": {"data": generated_data(type="teleporter", name=SECRET)},
    "metadata not an object": {"data": generated_data(metadata=[SECRET])},
    "lone surrogate in the name": {"data": json.dumps(generated_data(name="a\ud800" + SECRET))},
    "lone surrogate in metadata": {"data": json.dumps(generated_data(metadata={"\udfff": 1}))},
    "timestamp past year 9999": {"occurred_at": "10000-01-01T00:00:00Z"},
    "timestamp infinity": {"occurred_at": "infinity"},
    "timestamp -infinity": {"occurred_at": "-infinity"},
}
# Rows that show (JSON writes NUL as \u0000) but on which no command may build.
UNSTORABLE: dict[str, dict[str, Any]] = {
    "NUL in the name": {"data": generated_data(name="a\u0000b")},
    "NUL in a metadata value": {"data": generated_data(metadata={"k": "v\u0000"})},
}
# A poison event later in the stream of a key the API generated: the key's
# stream no longer folds (or no longer stores), so it takes no command.
LATER: dict[str, dict[str, Any]] = {
    "rename, data not an object": {"event_type": "KeyRenamed", "data": "[1]"},
    "disable, actor a string": {
        "event_type": "KeyDisabled",
        "data": {"reason": "r"},
        "actor": '"someone"',
    },
    "unknown event type": {"event_type": "KeyTeleported", "data": {}},
    "rename at infinity": {
        "event_type": "KeyRenamed",
        "data": {"name": "x", "previous_name": "p"},
        "occurred_at": "infinity",
    },
    "enable past year 9999": {
        "event_type": "KeyEnabled",
        "data": {},
        "occurred_at": "12000-06-01T00:00:00Z",
    },
    "rename with NUL": {
        "event_type": "KeyRenamed",
        "data": {"name": "x\u0000y", "previous_name": "p"},
    },
    "disable, reason a lone surrogate": {
        "event_type": "KeyDisabled",
        "data": json.dumps({"reason": "\ud800"}),
    },
    "revoke, unknown reason": {"event_type": "KeyRevoked", "data": {"reason": "boredom"}},
}
COMMAND_BODIES: dict[str, dict[str, Any]] = {
    "rename": {"name": "new name"},
    "disable": {"reason": "no"},
    "enable": {},
    "revoke": {"reason": "leaked"},
    "rotate": {},
}


def _placeholder_ok(item: dict[str, Any], poison: Injected) -> None:
    assert item["unreadable"] is True, item
    assert item["position"] == poison.position
    assert item["event_type"] == poison.event_type
    assert item["key_id"] == poison.key_id
    assert "data" not in item and "actor" not in item


async def _inject_all(app: IsolatedApp, org: str, poisons: dict[str, dict[str, Any]]) -> dict:
    injected = {}
    async with app.pool.acquire() as conn:
        for label, kwargs in poisons.items():
            injected[label] = await inject(conn, org, **kwargs)
    return injected


async def test_audit_and_history_show_unreadable_rows_as_placeholders(
    postgres_server_url: str, settings: Settings
) -> None:
    async with isolated_app(postgres_server_url, settings) as app:
        api = Api(app.client, app.admin_key)
        org = new_org()
        before = await api.generate(org, name="before")
        unreadable = await _inject_all(app, org, UNREADABLE)
        unstorable = await _inject_all(app, org, UNSTORABLE)
        after = await api.generate(org, name="after")

        response = await app.client.get(f"/v1/audit?org_id={org}&limit=1000", headers=app.headers())
        text = await response.text()
        assert response.status == 200, text
        assert SECRET not in text
        page = json.loads(text)
        shapes.AuditPage.model_validate(page)
        by_position = {item["position"]: item for item in page["data"]}
        for label, poison in unreadable.items():
            assert by_position[poison.position]["unreadable"] is True, label
            _placeholder_ok(by_position[poison.position], poison)
        for poison in unstorable.values():  # shown as they are, NUL escaped by JSON
            assert by_position[poison.position]["data"]["secret_hash"]
        for good in (before, after):
            shown = by_position[good["position"]]
            assert shown["key_id"] == good["key"]["id"] and "hash" in shown

        # Every filter and the paging go past such rows too.
        everything = sorted(by_position)
        walked: list[int] = []
        cursor = ""
        while True:
            status, _, page = await api.get(f"/v1/audit?org_id={org}&limit=2{cursor}")
            assert status == 200
            walked += [item["position"] for item in page["data"]]
            if page["next_cursor"] is None:
                break
            cursor = f"&after={page['next_cursor']}"
        assert walked == everything
        since = (utc_now() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        for query in (
            "event_type=KeyGenerated",
            "actor=test:poison",
            f"since={since}",
            "until=9999-12-31T00:00:00Z",
            f"key_id={unreadable['timestamp past year 9999'].key_id}",
            f"key_id={unreadable['actor a JSON string'].key_id}",
        ):
            response = await app.client.get(f"/v1/audit?{query}", headers=app.headers())
            assert response.status == 200, (query, await response.text())
            assert SECRET not in await response.text()

        # A key's history: the same placeholder, in its place.
        for label, poison in {**unreadable, **unstorable}.items():
            path = f"/v1/orgs/{org}/keys/{poison.key_id}/events"
            response = await app.client.get(path, headers=app.headers())
            text = await response.text()
            assert response.status == 200, (label, text)
            assert SECRET not in text
            history = json.loads(text)
            shapes.KeyEvents.model_validate(history)
            [item] = history["data"]
            if label in unreadable:
                _placeholder_ok(item, poison)
            else:
                assert item["event_type"] == "KeyGenerated" and "data" in item
            # Another org does not see the key at all.
            status, _, _ = await api.get(f"/v1/orgs/{new_org()}/keys/{poison.key_id}/events")
            assert status == 404


async def test_a_command_on_a_key_that_does_not_fold_is_409_and_its_neighbours_commit(
    postgres_server_url: str, settings: Settings
) -> None:
    async with isolated_app(postgres_server_url, settings) as app:
        api = Api(app.client, app.admin_key)
        org = new_org()
        victims: dict[str, Injected] = {}
        for label, kwargs in LATER.items():
            key = await api.generate(org, name=f"victim: {label}")
            async with app.pool.acquire() as conn:
                victims[label] = await inject(
                    conn, org, key_id=key["key"]["id"], stream_version=2, **kwargs
                )
        # Keys whose very first row is poison (or a rename of a key never generated).
        victims |= await _inject_all(app, org, {**UNREADABLE, **UNSTORABLE})
        async with app.pool.acquire() as conn:
            victims["rename of a key never generated"] = await inject(
                conn, org, event_type="KeyRenamed", data={"name": "n", "previous_name": "p"}
            )
        bystanders = [await api.generate(new_org(), name=f"bystander {n}") for n in range(5)]

        async with app.pool.acquire() as conn:
            rows_before = await conn.fetchval("SELECT count(*) FROM events")

        async def command(org_id: str, key_id: str, verb: str) -> tuple[int, Any]:
            path = f"/v1/orgs/{org_id}/keys/{key_id}/{verb}"
            status, _, body = await api.post(path, COMMAND_BODIES[verb])
            return status, body

        poisoned = [(v.key_id, verb) for v in victims.values() for verb in COMMAND_BODIES]
        normal = [(b["key"]["org_id"], b["key"]["id"]) for b in bystanders]
        answers = await asyncio.gather(
            *(command(org, key_id, verb) for key_id, verb in poisoned),
            *(command(org_id, key_id, "rename") for org_id, key_id in normal),
            *(
                api.post(f"/v1/orgs/{new_org()}/keys", {"name": "n", "type": "secret"})
                for _ in "ab"
            ),
        )
        for (key_id, verb), (status, body) in zip(poisoned, answers, strict=False):
            assert status == 409, (key_id, verb, status, body)
            assert body["error"]["code"] == "key_quarantined"
            assert SECRET not in json.dumps(body)
        for status, body in answers[len(poisoned) : len(poisoned) + len(normal)]:
            assert status == 200, body
        assert [a[0] for a in answers[len(poisoned) + len(normal) :]] == [201, 201]
        async with app.pool.acquire() as conn:
            written = await conn.fetch("SELECT key_id FROM events WHERE position > $1", rows_before)
        assert sorted(r["key_id"] for r in written) == sorted(
            [key_id for _, key_id in normal] + [a[2]["key"]["id"] for a in answers[-2:]]
        )
        # The 409 names where the stream stops folding; another org's caller gets 404.
        for label, victim in victims.items():
            status, body = await command(org, victim.key_id, "revoke")
            assert body["error"]["details"]["position"] == victim.position, label
            status, body = await command(new_org(), victim.key_id, "revoke")
            assert (status, body["error"]["code"]) == (404, "key_not_found"), label


async def test_audit_verify_walks_past_poison_and_names_a_row_it_cannot_hash(
    postgres_server_url: str, settings: Settings
) -> None:
    async with isolated_app(postgres_server_url, settings) as app:
        api = Api(app.client, app.admin_key)
        org = new_org()
        await api.generate(org, name="first")
        hashable = {k: v for k, v in UNREADABLE.items() if "lone surrogate" not in k}
        await _inject_all(app, org, {**hashable, **UNSTORABLE})
        last = await api.generate(org, name="last")

        status, _, report = await api.get("/v1/audit/verify")
        assert status == 200
        assert report["ok"] is True, report
        cli = await _cli(app, "audit", "verify")
        assert cli.returncode == 0, cli.stdout + cli.stderr
        assert json.loads(cli.stdout)["ok"] is True

        # A row whose stored JSON cannot even be encoded breaks the chain at its position.
        async with app.pool.acquire() as conn:
            broken = await inject(conn, org, data=json.dumps(generated_data(name="\ud800")))
        response = await app.client.get("/v1/audit/verify", headers=app.headers())
        text = await response.text()
        assert response.status == 200, text
        assert json.loads(text)["ok"] is False and str(broken.position) in text
        assert last["position"] < broken.position
        cli = await _cli(app, "audit", "verify")
        assert cli.returncode == 1 and str(broken.position) in cli.stdout, cli.stderr
        assert "Traceback" not in cli.stderr


async def _cli(app: IsolatedApp, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "KEYLEDGER_DATABASE_URL": app.database_url,
        "KEYLEDGER_LOG_LEVEL": "error",
        "KEYLEDGER_NATS_URL": "",
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_rebuild_command_goes_past_every_unreadable_row(
    postgres_server_url: str, settings: Settings
) -> None:
    async with isolated_app(postgres_server_url, settings) as app:
        api = Api(app.client, app.admin_key)
        org = new_org()
        good = [await api.generate(org, name="good")]
        poisons = await _inject_all(app, org, UNREADABLE)
        good.append(await api.generate(org, name="also good"))
        done = await _cli(app, "projections", "rebuild", "key_views")
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        _, _, page = await api.get(f"/v1/orgs/{org}/keys")
        # key_views folds events without their actor: a key with a bad actor is listed
        # (the relay, which publishes the actor, is the one to set it aside).
        listed = {g["key"]["id"] for g in good} | {
            p.key_id for label, p in poisons.items() if label.startswith("actor")
        }
        assert {key["id"] for key in page["data"]} == listed
        async with app.pool.acquire() as conn:
            set_aside = await conn.fetch(
                "SELECT key_id FROM quarantined_keys WHERE consumer = 'key_views'"
            )
        assert {r["key_id"] for r in set_aside} == {
            p.key_id for label, p in poisons.items() if not label.startswith("actor")
        }


async def test_the_expiry_sweeper_expires_every_other_key_past_a_poisoned_one(
    postgres_server_url: str, settings: Settings
) -> None:
    # The app's own sweeper is slowed to an hour: it must not expire a key before the test
    # has poisoned it, and the sweep under test is the one called below.
    async with isolated_app(
        postgres_server_url, settings, expiry_sweep_interval_seconds=3600
    ) as app:
        commands = app.client.app[KEYLEDGER].commands
        past = utc_now() - timedelta(seconds=5)
        org = new_org()
        key_ids = []
        for number in range(6):
            command = GenerateKey(
                key_id=new_key_id(),
                org_id=org,
                name=f"expiring {number}",
                type="secret",
                environment="live",
                issued_at=past - timedelta(minutes=1),
                secret_hash=key_material.secret_hash(
                    b"p", key_material.new_secret("secret", "live")
                ),
                # The poisoned keys are due first: they are met before the others.
                expires_at=past - timedelta(seconds=3 - number) if number < 3 else past,
            )
            await commands.handle(command, org_id=org, actor=Actor(id="test"))
            key_ids.append(command.key_id)
        poisoned, healthy = key_ids[:3], key_ids[3:]
        async with app.pool.acquire() as conn:
            for key_id, kwargs in zip(poisoned, list(LATER.values())[:3], strict=True):
                await inject(conn, org, key_id=key_id, stream_version=2, **kwargs)
        sweeper = ExpirySweeper(commands, interval_seconds=60)
        await sweeper.sweep_once()
        assert await sweeper.sweep_once() == 0  # the poisoned keys are skipped again, quietly
        rows = await app.pool.fetch("SELECT key_id FROM events WHERE event_type = 'KeyExpired'")
        assert sorted(r["key_id"] for r in rows) == sorted(healthy)


async def test_events_tail_skips_malformed_messages_and_prints_the_rest(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> None:
    async with isolated_app_with_relay(postgres_server_url, settings, nats_url) as (
        app,
        js,
        stream,
    ):
        api = Api(app.client, app.admin_key)
        org = new_org()
        first = await api.generate(org, name="first")
        async with app.pool.acquire() as conn:
            nul = await inject(conn, org, data=generated_data(name="a\u0000\u001bb"))
            await inject(conn, org, data="[1]")
            await inject(conn, "nl\n")
        last = await api.generate(org, name="last")
        await eventually(
            _published_through(js, stream.nats_stream, last["position"]), what="the relay"
        )
        subject = f"{stream.nats_subject_prefix}.{org}.key_junk.KeyGenerated"
        for junk in (
            b"\xff\xfe not UTF-8",
            b'{"event_id": "\\ud800"}',
            b"[1, 2]",
            json.dumps({"hello": SECRET}).encode(),
            b"{" * 5000,
        ):
            await js.publish(subject, junk, stream=stream.nats_stream)
        env = {
            **os.environ,
            "KEYLEDGER_NATS_URL": nats_url,
            "KEYLEDGER_NATS_STREAM": stream.nats_stream,
            "KEYLEDGER_NATS_SUBJECT_PREFIX": stream.nats_subject_prefix,
        }
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "service.cli.main", "events", "tail",
            "--org", org, "--from-start", "--max", "4",
            env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        await js.publish(
            subject.replace("key_junk", "key_late"), b"\x00", stream=stream.nats_stream
        )
        async with app.pool.acquire() as conn:
            late = await inject(conn, org)
        stdout, stderr = await asyncio.wait_for(process.communicate(), 60)
        assert process.returncode == 0, stderr.decode()
        lines = [json.loads(line) for line in stdout.decode().splitlines()]
        assert [line["position"] for line in lines] == [
            first["position"],
            nul.position,
            last["position"],
            late.position,
        ]
        assert lines[1]["data"]["name"] == "a\u0000\u001bb"
        assert SECRET.encode() not in stdout + stderr
        assert b"Traceback" not in stderr
        assert stderr.decode().count("skipped a malformed message") == 6


def _published_through(js: Any, stream: str, position: int) -> Any:
    async def check() -> bool:
        info = await js.stream_info(stream)
        if not info.state.messages:
            return False
        last = await js.get_msg(stream, info.state.last_seq)
        return json.loads(last.data)["position"] >= position

    return check
