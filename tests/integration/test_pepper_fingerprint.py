"""The pepper's fingerprint: recorded on the first start, a different pepper is refused."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench.support import scratch_database
from service.bootstrap import connect_database
from service.http.app import create_app
from service.settings import Settings
from service.store.migrate import migrate
from service.store.pepper_fingerprint import MISMATCH, PepperMismatch, pepper_fingerprint


@pytest.fixture
async def own_database(postgres_server_url: str) -> AsyncIterator[str]:
    async with scratch_database(postgres_server_url, prefix="keyledger_pepper") as url:
        yield url


def a_pepper() -> str:
    return secrets.token_hex(32)


async def stored_fingerprints(url: str) -> list[str]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT fingerprint FROM pepper_fingerprint")
        return [r["fingerprint"] for r in rows]
    finally:
        await conn.close()


def serve(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``keyledger serve`` expected to refuse to start (a timeout would fail the test)."""
    return subprocess.run(
        [sys.executable, "-m", "service.cli.main", "serve", "--port", "0"],
        env={**os.environ, "KEYLEDGER_NATS_URL": "", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_the_first_start_records_and_the_same_pepper_starts_again(own_database: str) -> None:
    pepper = a_pepper()
    settings = Settings.from_env({}, database_url=own_database, pepper=pepper)
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await client.get("/readyz")).status in (200, 503)
    assert await stored_fingerprints(own_database) == [pepper_fingerprint(pepper.encode())]
    async with TestClient(TestServer(create_app(settings))) as client:
        assert (await client.get("/healthz")).status == 200
    pool = await connect_database(settings)
    await pool.close()
    # Only the fingerprint is stored, never the pepper.
    assert await stored_fingerprints(own_database) == [pepper_fingerprint(pepper.encode())]
    assert pepper not in (await stored_fingerprints(own_database))[0]


async def test_another_pepper_is_refused(own_database: str) -> None:
    pepper = a_pepper()
    settings = Settings.from_env({}, database_url=own_database, pepper=pepper)
    pool = await connect_database(settings)
    await pool.close()
    last = "0" if pepper[-1] != "0" else "1"
    for other in (a_pepper(), pepper[:-1] + last, pepper + " ", pepper.upper(), pepper * 2):
        wrong = settings.replace(pepper=other)
        with pytest.raises(PepperMismatch, match=MISMATCH):
            await connect_database(wrong)
        with pytest.raises(PepperMismatch):
            async with TestClient(TestServer(create_app(wrong))):
                pass
    assert await stored_fingerprints(own_database) == [pepper_fingerprint(pepper.encode())]


async def test_serve_refuses_another_pepper_in_one_line(own_database: str) -> None:
    pepper = a_pepper()
    pool = await connect_database(Settings.from_env({}, database_url=own_database, pepper=pepper))
    await pool.close()
    other = a_pepper()
    done = await asyncio.to_thread(
        serve, {"KEYLEDGER_DATABASE_URL": own_database, "KEYLEDGER_PEPPER": other}
    )
    assert done.returncode == 2  # a setting the user can fix
    assert done.stderr.strip().splitlines()[-1] == f"keyledger: {MISMATCH}"
    assert other not in done.stderr + done.stdout and pepper not in done.stderr + done.stdout


@pytest.mark.parametrize(
    "command",
    [["serve", "--port", "0"], ["admin", "create-service-key", "--name", "x", "--scopes", "admin"]],
)
async def test_a_short_pepper_is_refused_before_anything_starts(
    own_database: str, command: list[str]
) -> None:
    conn = await asyncpg.connect(own_database)
    try:
        await migrate(conn)
    finally:
        await conn.close()
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "service.cli.main", *command],
        env={
            **os.environ,
            "KEYLEDGER_NATS_URL": "",
            "KEYLEDGER_DATABASE_URL": own_database,
            "KEYLEDGER_PEPPER": "short-pepper",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip().splitlines()[-1].startswith("keyledger: KEYLEDGER_PEPPER is too short")
    )
    assert "short-pepper" not in done.stderr + done.stdout
    # Nothing was recorded with the refused pepper.
    conn = await asyncpg.connect(own_database)
    try:
        assert await conn.fetchval("SELECT count(*) FROM pepper_fingerprint") == 0
    finally:
        await conn.close()
