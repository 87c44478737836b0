"""What the benchmarks and the tests both need: scratch databases, running replicas.

The benchmarks and the product never import ``tests``; the tests import this
module instead (``tests/unit/test_layers.py`` holds that rule). Every run works
in a database of its own, so parallel runs never see each other's events.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import asyncpg
import nats

from events.servers import nats_servers
from service.embedded import free_port
from service.store.migrate import migrate


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database on the same server."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


@contextlib.asynccontextmanager
async def scratch_database(server_url: str, prefix: str = "keyledger_test") -> AsyncIterator[str]:
    """A new, empty database for the duration of the block; dropped afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield with_database(server_url, name)
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()


@contextlib.asynccontextmanager
async def migrated_database(
    server_url: str, prefix: str = "keyledger_test"
) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A scratch database with the schema in place, and a small pool on it."""
    async with scratch_database(server_url, prefix) as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        async with asyncpg.create_pool(url, min_size=1, max_size=4) as pool:
            yield url, pool


@dataclass(frozen=True, slots=True)
class Replicas:
    """Base URLs of running replicas, and the pepper they share."""

    urls: tuple[str, ...]
    pepper: str
    # The replicas' process ids (for the CPU time they spend: ``bench.wrk.cpu_seconds``).
    pids: tuple[int, ...] = ()
    # Their JetStream stream (None without NATS), deleted when they stop.
    stream: str | None = None

    async def until_accepted(self, session: aiohttp.ClientSession, service_key: str) -> None:
        """Wait until every replica accepts ``service_key`` (its index has the new key)."""
        headers = {"Authorization": f"Bearer {service_key}"}
        for url in self.urls:
            for _ in range(100):
                async with session.get(f"{url}/v1/orgs/_system/keys?limit=1", headers=headers) as r:
                    if r.status != 401:
                        break
                await asyncio.sleep(0.1)
            else:
                raise TimeoutError(f"{url} never accepted the new service key")


async def _wait_healthy(
    session: aiohttp.ClientSession, url: str, process: asyncio.subprocess.Process
) -> None:
    for _ in range(300):
        if process.returncode is not None:
            raise RuntimeError(f"replica at {url} exited with {process.returncode}")
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{url}/healthz") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"replica at {url} did not become healthy")


@contextlib.asynccontextmanager
async def running_replicas(
    count: int,
    database_url: str,
    nats_url: str | None,
    pepper: str | None = None,
    workers: int = 1,
    tree: Path | None = None,
    **settings: str,
) -> AsyncIterator[Replicas]:
    """``count`` replicas of ``keyledger serve`` (each ``--workers workers``); stopped
    (SIGTERM) on exit. ``tree``: a copy of the sources to run (``bench.compiled_tree``),
    else this one.

    ``pepper`` defaults to a new one: a database keeps the first pepper's fingerprint, so
    replicas started on it again must be given the same one.
    """
    pepper = pepper or "replicas-" + secrets.token_hex(16)
    token = uuid.uuid4().hex[:10]
    stream = settings.get("nats_stream", f"REPLICAS_{token}")
    executable = Path(sys.executable).parent / "keyledger"
    processes: list[asyncio.subprocess.Process] = []
    urls = []
    try:
        for _ in range(count):
            port = free_port()
            env = {
                **os.environ,
                "KEYLEDGER_DATABASE_URL": database_url,
                "KEYLEDGER_NATS_URL": nats_url or "",
                "KEYLEDGER_PEPPER": pepper,
                "KEYLEDGER_HOST": "127.0.0.1",
                "KEYLEDGER_PORT": str(port),
                "KEYLEDGER_NATS_STREAM": stream,
                "KEYLEDGER_NATS_SUBJECT_PREFIX": f"replicas.{token}",
                "KEYLEDGER_LOG_LEVEL": "warning",
                **{f"KEYLEDGER_{name.upper()}": value for name, value in settings.items()},
            }
            if tree is not None:
                env["PYTHONPATH"] = str(tree)
            processes.append(
                await asyncio.create_subprocess_exec(
                    str(executable),
                    "serve",
                    f"--workers={workers}",
                    env=env,
                    cwd=tree,
                    stdout=asyncio.subprocess.DEVNULL,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        async with aiohttp.ClientSession() as session:
            for url, process in zip(urls, processes, strict=True):
                await _wait_healthy(session, url, process)
        yield Replicas(
            urls=tuple(urls),
            pepper=pepper,
            pids=tuple(process.pid for process in processes),
            stream=stream if nats_url else None,
        )
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):  # one that exited already
                process.terminate()
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        if nats_url:
            await delete_stream(nats_url, stream)


async def delete_stream(nats_url: str, stream: str) -> None:
    """Delete a run's JetStream stream, if it is there: NATS keeps every message of a stream
    on disk until it is deleted, and a benchmark's run leaves hundreds of thousands."""
    # Once, briefly: this runs in cleanups, where NATS being down must neither hold the
    # caller for minutes (nats-py's default retries) nor replace the caller's own error.
    with contextlib.suppress(Exception):  # nats-py raises several unrelated types
        client = await nats.connect(
            servers=nats_servers(nats_url), connect_timeout=2, max_reconnect_attempts=0
        )
        try:
            await client.jetstream().delete_stream(stream)
        finally:
            await client.close()


@contextlib.contextmanager
def benchmark_servers(workdir: Path, *, nats: bool = True) -> Iterator[tuple[str, str | None]]:
    """PostgreSQL's server URL and NATS's (None without ``nats``): the ones named by
    ``KEYLEDGER_TEST_DATABASE_URL`` / ``KEYLEDGER_TEST_NATS_URL``, else embedded ones in
    ``workdir``, stopped at the end."""
    from service.embedded import EmbeddedNats, EmbeddedPostgres

    given_pg = os.environ.get("KEYLEDGER_TEST_DATABASE_URL")
    given_nats = os.environ.get("KEYLEDGER_TEST_NATS_URL")
    embedded_pg = None if given_pg else EmbeddedPostgres(workdir / "pg")
    embedded_nats = None if given_nats or not nats else EmbeddedNats(workdir / "nats")
    try:
        server_url = embedded_pg.start() if embedded_pg is not None else given_pg or ""
        nats_url = embedded_nats.start() if embedded_nats is not None else given_nats
        yield server_url, nats_url
    finally:
        if embedded_nats:
            embedded_nats.stop()
        if embedded_pg:
            embedded_pg.stop()
