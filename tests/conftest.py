"""Session-wide fixtures: a real PostgreSQL database, a running app, an admin key."""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from bench.support import scratch_database
from events.models import Actor
from service.embedded import EmbeddedNats, EmbeddedPostgres
from service.http.app import create_app
from service.http.context import KEYLEDGER
from service.log_config import configure_logging
from service.service_keys import issue_service_key
from service.settings import Settings
from tests.support.api import Api, indexed

TEST_PEPPER = "test-pepper-" + secrets.token_hex(16)


@pytest.fixture(scope="session")
def captured_logs() -> io.StringIO:
    """Everything the service logs during the session, as JSON lines."""
    buffer = io.StringIO()
    configure_logging("debug", stream=buffer)
    return buffer


@pytest.fixture(scope="session")
def postgres_server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server: the one named by the environment, or an embedded one."""
    url = os.environ.get("KEYLEDGER_TEST_DATABASE_URL")
    if url:
        yield url
        return
    server = EmbeddedPostgres(tmp_path_factory.mktemp("postgres") / "data")
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A NATS server with JetStream: from the environment, or embedded."""
    url = os.environ.get("KEYLEDGER_TEST_NATS_URL")
    if url:
        yield url
        return
    server = EmbeddedNats(tmp_path_factory.mktemp("nats"))
    yield server.start()
    server.stop()


@pytest.fixture(scope="session")
async def database_url(postgres_server_url: str) -> AsyncIterator[str]:
    """This session's own database."""
    async with scratch_database(postgres_server_url) as url:
        yield url


@pytest.fixture(scope="session")
def settings(database_url: str, captured_logs: io.StringIO) -> Settings:
    return Settings.from_env(
        {},
        database_url=database_url,
        pepper=TEST_PEPPER,
        expiry_sweep_interval_seconds=0.2,
        # Snapshots are written by the tests that check them, not on a timer mid-session.
        snapshot_interval_seconds=0,
    )


@pytest.fixture(scope="session")
async def client(settings: Settings) -> AsyncIterator[TestClient]:
    """A running keyledger API on a local port."""
    async with TestClient(TestServer(create_app(settings))) as test_client:
        yield test_client


@pytest.fixture(scope="session")
async def pool(client: TestClient) -> asyncpg.Pool:
    return client.app[KEYLEDGER].pool


@pytest.fixture(scope="session")
async def admin_key(client: TestClient, pool: asyncpg.Pool, settings: Settings) -> str:
    issued = await issue_service_key(
        pool, settings.pepper_bytes, name="test admin", scopes=["admin"], actor=Actor(id="test")
    )
    await indexed(client, issued.position)
    return issued.secret


@pytest.fixture(scope="session")
def api(client: TestClient, admin_key: str) -> Api:
    """The API as an admin service key."""
    return Api(client, admin_key)
