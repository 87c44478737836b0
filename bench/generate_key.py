"""GenerateKey throughput at 32 concurrent clients, beside a raw INSERT (issue 2).

The API runs in this process (as ``keyledger serve`` would); the 32 clients
run in a separate process so they do not share the server's event loop. The
baseline, measured in the same run on the same database: 32 connections each
doing single-row autocommit ``INSERT``s, i.e. the ceiling of one-row
transactions on this PostgreSQL.

    python -m bench.generate_key [--seconds 10] [--clients 32]

Uses ``KEYLEDGER_TEST_DATABASE_URL`` (a server; a scratch database is made on
it and dropped) or, when unset, an embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import aiohttp
import asyncpg
from aiohttp import web

from bench.support import scratch_database
from events.models import Actor
from service.embedded import EmbeddedPostgres, free_port
from service.http.app import create_app
from service.http.context import KEYLEDGER
from service.log_config import configure_logging
from service.service_keys import issue_service_key
from service.settings import Settings


async def _clients(url: str, token: str, clients: int, seconds: float) -> tuple[int, int]:
    ok = failed = 0
    deadline = time.perf_counter() + seconds
    headers = {"Authorization": f"Bearer {token}"}

    async def client(index: int) -> None:
        nonlocal ok, failed
        async with aiohttp.ClientSession(headers=headers) as session:
            while time.perf_counter() < deadline:
                # One org per client and a high limit: the benchmark measures writes, not refusals.
                async with session.post(
                    f"{url}/v1/orgs/bench-{index}/keys", json={"name": "k", "type": "secret"}
                ) as response:
                    await response.read()
                    if response.status == 201:
                        ok += 1
                    else:
                        failed += 1

    await asyncio.gather(*(client(i) for i in range(clients)))
    return ok, failed


def _load_process(
    url: str, token: str, clients: int, seconds: float, out: multiprocessing.Queue[tuple[int, int]]
) -> None:
    out.put(asyncio.run(_clients(url, token, clients, seconds)))


async def raw_insert_rate(database_url: str, clients: int, seconds: float) -> float:
    """Single-row autocommit INSERTs per second over ``clients`` connections."""
    setup = await asyncpg.connect(database_url)
    await setup.execute(
        "CREATE TABLE IF NOT EXISTS bench_raw (id bigserial PRIMARY KEY, org text, data jsonb)"
    )
    await setup.close()
    count = 0
    deadline = time.perf_counter() + seconds

    async def writer() -> None:
        nonlocal count
        conn = await asyncpg.connect(database_url)
        try:
            while time.perf_counter() < deadline:
                await conn.execute(
                    "INSERT INTO bench_raw (org, data) VALUES ($1, $2)", "bench", '{"name": "k"}'
                )
                count += 1
        finally:
            await conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(clients)))
    return count / (time.perf_counter() - started)


async def generate_rate(database_url: str, clients: int, seconds: float) -> tuple[float, int]:
    settings = Settings.from_env(
        {},
        database_url=database_url,
        pepper="bench-pepper-" + "0" * 32,
        max_active_keys_per_org=10_000_000,
        db_pool_max_size=20,
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        issued = await issue_service_key(
            app[KEYLEDGER].pool,
            settings.pepper_bytes,
            name="bench",
            scopes=["admin"],
            actor=Actor(id="b"),
        )
        # The index learns of the new service key from its notification.
        await app[KEYLEDGER].verifier.feed.wait_for(issued.position, 10.0)
        spawn = multiprocessing.get_context("spawn")
        queue = spawn.Queue()
        load = spawn.Process(
            target=_load_process,
            args=(f"http://127.0.0.1:{port}", issued.secret, clients, seconds, queue),
        )
        started = time.perf_counter()
        load.start()
        await asyncio.to_thread(load.join)
        elapsed = time.perf_counter() - started
        ok, failed = queue.get(timeout=5)
        return ok / min(elapsed, seconds + 1), failed
    finally:
        await runner.cleanup()


async def main(seconds: float, clients: int) -> None:
    configure_logging("warning")
    server_url = os.environ.get("KEYLEDGER_TEST_DATABASE_URL")
    embedded = None
    if not server_url:
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp()) / "pg")
        server_url = embedded.start()
    try:
        async with scratch_database(server_url, prefix="keyledger_bench") as url:
            baseline = await raw_insert_rate(url, clients, seconds)
            rate, failed = await generate_rate(url, clients, seconds)
    finally:
        if embedded:
            embedded.stop()
    print(f"| raw single-row INSERT, {clients} connections | {baseline:,.0f} rows/s | 1.00 |")
    print(
        f"| GenerateKey over HTTP, {clients} clients | {rate:,.0f} keys/s "
        f"| {rate / baseline:.2f} |" + (f" ({failed} non-201)" if failed else "")
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    args = parser.parse_args()
    asyncio.run(main(args.seconds, args.clients))
