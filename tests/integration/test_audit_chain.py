"""Walking the hash chain: a clean log verifies, an edited or missing event is named."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest

from bench.support import scratch_database
from events.codec import canonical_json, chain_hash, envelope_body
from service.store.audit_chain import verify_chain
from service.store.event_store import EVENT_COLUMNS, envelope_from_row
from service.store.migrate import migrate
from tests.support.api import Api, new_org
from tests.support.event_log import append_key, append_rename


@pytest.fixture
async def small_log(postgres_server_url: str) -> AsyncIterator[tuple[str, asyncpg.Connection]]:
    """A scratch database holding a log of 6 events."""
    async with scratch_database(postgres_server_url, prefix="keyledger_chain") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            org = new_org()
            first = await append_key(conn, org, "first")
            await append_key(conn, org, "second")
            await append_rename(conn, first, 1, "renamed")
            for i in range(3):
                await append_key(conn, org, f"more {i}")
            yield url, conn
        finally:
            await conn.close()


async def _tamper(conn: asyncpg.Connection, sql: str) -> None:
    """Run ``sql`` on events with the append-only triggers off, as a superuser could."""
    await conn.execute("ALTER TABLE events DISABLE TRIGGER USER")
    try:
        await conn.execute(sql)
    finally:
        await conn.execute("ALTER TABLE events ENABLE TRIGGER USER")


def _cli_verify(url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service.cli.main", "audit", "verify"],
        env={**os.environ, "KEYLEDGER_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_an_intact_log_verifies(small_log: tuple[str, asyncpg.Connection]) -> None:
    url, conn = small_log
    report = await verify_chain(conn, page_size=4)
    assert report.as_json() == {"ok": True, "events": 6, "broken_at": None}
    done = await asyncio.to_thread(_cli_verify, url)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["ok"], answer["events"], answer["broken_at"]) == (True, 6, None)
    assert answer["log_truncated"] is False and answer["head"]["position"] == 6


async def test_an_edited_event_is_named(small_log: tuple[str, asyncpg.Connection]) -> None:
    url, conn = small_log
    await _tamper(
        conn,
        """UPDATE events SET data = json_build_object('name', 'evil', 'previous_name', 'first')
           WHERE position = 3""",
    )
    report = await verify_chain(conn, page_size=4)
    assert (report.ok, report.events, report.broken_at) == (False, 2, 3)
    assert "hash does not match" in report.reason
    done = await asyncio.to_thread(_cli_verify, url)
    assert done.returncode == 1
    assert '"broken_at": 3' in done.stdout and '"ok": false' in done.stdout


async def test_a_resealed_edit_breaks_the_next_link(
    small_log: tuple[str, asyncpg.Connection],
) -> None:
    _, conn = small_log
    # An editor who also recomputes event 2's own hash still breaks event 3's link.
    rows = await conn.fetch(
        f"SELECT {EVENT_COLUMNS} FROM events WHERE position <= 2 ORDER BY position"
    )
    edited = envelope_from_row(rows[1]).model_copy(
        update={"data": {**rows_data(rows[1]), "name": "evil"}}
    )
    resealed = chain_hash(rows[0]["hash"], envelope_body(edited))
    await _tamper(
        conn,
        f"UPDATE events SET data = '{canonical_json(edited.data)}', hash = '{resealed}'"
        " WHERE position = 2",
    )
    report = await verify_chain(conn)
    assert (report.ok, report.broken_at) == (False, 3)


def rows_data(row: asyncpg.Record) -> dict:
    return json.loads(row["data"])


async def test_a_missing_event_is_named(small_log: tuple[str, asyncpg.Connection]) -> None:
    _, conn = small_log
    await _tamper(conn, "DELETE FROM events WHERE position = 5")
    report = await verify_chain(conn, page_size=2)
    assert (report.ok, report.events, report.broken_at) == (False, 4, 5)
    assert report.reason == "event 5 is missing"


async def test_the_append_only_triggers_refuse_edits(
    small_log: tuple[str, asyncpg.Connection],
) -> None:
    _, conn = small_log
    with pytest.raises(asyncpg.InsufficientPrivilegeError):
        await conn.execute("UPDATE events SET data = '{}' WHERE position = 1")


async def test_audit_verify_over_http(api: Api) -> None:
    await api.generate(new_org())
    status, _, body = await api.get("/v1/audit/verify")
    assert status == 200
    assert body["ok"] is True and body["broken_at"] is None and body["events"] >= 1
    assert body["log_truncated"] is False and body["head"]["position"] == body["events"]
    # The index applied the command before it answered: a witness the log holds.
    assert {w["source"]: w["held"] for w in body["witnesses"]}["verification_index"] is True
    status, _, body = await api.get("/v1/audit/verify?min_position=abc")
    assert status == 422 and body["error"]["code"] == "invalid_min_position"
