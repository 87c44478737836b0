"""SIGTERM during a burst of commands loses nothing that was acknowledged (issue 6).

A real ``keyledger serve`` (scratch database, NATS with a stream of its own)
gets a burst of GenerateKey commands; SIGTERM arrives mid-burst. The server
must stop accepting, finish what is in flight, let the relay publish, and
exit 0; every command answered 201 must then be in the log and on the
JetStream stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator

import aiohttp
import asyncpg
import nats
import pytest
from nats.errors import TimeoutError as NatsTimeout

from bench.support import scratch_database
from tests.support.serve_process import Served, served

BURST = 400
CONCURRENCY = 16
SIGTERM_AFTER = 40  # acknowledged commands


@pytest.fixture
async def server_with_nats(postgres_server_url: str, nats_url: str) -> AsyncIterator[Served]:
    async with scratch_database(postgres_server_url, prefix="keyledger_shutdown") as url:
        with served(url, nats_url, max_active_keys_per_org="100000") as server:
            yield server
            nc = await nats.connect(nats_url)
            with contextlib.suppress(Exception):
                await nc.jetstream().delete_stream(server.env["KEYLEDGER_NATS_STREAM"])
            await nc.close()


async def _burst(server: Served) -> dict[str, int]:
    """Fire GenerateKey commands; SIGTERM once enough are acknowledged. key id → position."""
    acknowledged: dict[str, int] = {}
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(BURST):
        queue.put_nowait(n)
    headers = {"Authorization": f"Bearer {server.admin_key}"}

    async def client(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            n = queue.get_nowait()
            try:
                async with session.post(
                    f"{server.url}/v1/orgs/shutdown-test/keys",
                    json={"name": f"burst {n}", "type": "secret"},
                    headers=headers,
                ) as response:
                    if response.status == 201:
                        body = await response.json()
                        acknowledged[body["key"]["id"]] = body["position"]
            except (TimeoutError, aiohttp.ClientError):
                continue  # refused or cut off by the shutdown: not acknowledged
            if len(acknowledged) == SIGTERM_AFTER:
                server.process.send_signal(signal.SIGTERM)

    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(client(session) for _ in range(CONCURRENCY)))
    return acknowledged


async def _published_key_ids(nats_url: str, server: Served) -> set[str]:
    prefix = server.env["KEYLEDGER_NATS_SUBJECT_PREFIX"]
    nc = await nats.connect(nats_url)
    try:
        sub = await nc.jetstream().subscribe(f"{prefix}.>", ordered_consumer=True)
        seen: set[str] = set()
        while True:
            try:
                msg = await sub.next_msg(timeout=2)
            except NatsTimeout:
                return seen
            seen.add(msg.subject.split(".")[-2])
    finally:
        await nc.close()


async def test_sigterm_mid_burst_keeps_every_acknowledged_command(
    server_with_nats: Served, nats_url: str
) -> None:
    server = server_with_nats
    acknowledged = await _burst(server)
    returncode = await asyncio.to_thread(server.process.wait, 60)
    assert returncode == 0
    assert SIGTERM_AFTER <= len(acknowledged) < BURST, "SIGTERM did not land mid-burst"

    conn = await asyncpg.connect(server.env["KEYLEDGER_DATABASE_URL"])
    try:
        logged = dict(
            await conn.fetch(
                "SELECT key_id, position FROM events WHERE event_type = 'KeyGenerated'"
                " AND key_id = ANY($1::text[])",
                list(acknowledged),
            )
        )
    finally:
        await conn.close()
    assert logged == acknowledged
    published = await _published_key_ids(nats_url, server)
    assert set(acknowledged) <= published
