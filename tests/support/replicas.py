"""Several ``keyledger serve`` processes on one database and NATS (tests and bench)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.http.app import create_app
from service.settings import Settings


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True, slots=True)
class Replicas:
    """Base URLs of running replicas, and the pepper they share."""

    urls: tuple[str, ...]
    pepper: str

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
    count: int, database_url: str, nats_url: str | None, **settings: str
) -> AsyncIterator[Replicas]:
    """``count`` replicas of ``keyledger serve``; stopped (SIGTERM) on exit."""
    pepper = "replicas-" + secrets.token_hex(16)
    token = uuid.uuid4().hex[:10]
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
                "KEYLEDGER_NATS_STREAM": f"REPLICAS_{token}",
                "KEYLEDGER_NATS_SUBJECT_PREFIX": f"replicas.{token}",
                "KEYLEDGER_LOG_LEVEL": "warning",
                **{f"KEYLEDGER_{name.upper()}": value for name, value in settings.items()},
            }
            processes.append(
                await asyncio.create_subprocess_exec(
                    str(executable), "serve", env=env, stdout=asyncio.subprocess.DEVNULL
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        async with aiohttp.ClientSession() as session:
            for url, process in zip(urls, processes, strict=True):
                await _wait_healthy(session, url, process)
        yield Replicas(urls=tuple(urls), pepper=pepper)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()


@contextlib.asynccontextmanager
async def in_process_replica(
    settings: Settings, **changes: object
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """Another app instance in this process, on the same database (and its own index)."""
    async with TestClient(TestServer(create_app(settings.replace(**changes)))) as client:
        yield client
