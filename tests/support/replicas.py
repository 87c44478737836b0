"""Another app instance in this process (several ``serve`` processes: ``bench.support``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.http.app import create_app
from service.settings import Settings


@contextlib.asynccontextmanager
async def in_process_replica(
    settings: Settings, **changes: object
) -> AsyncIterator[TestClient[web.Request, web.Application]]:
    """Another app instance in this process, on the same database (and its own index)."""
    async with TestClient(TestServer(create_app(settings.replace(**changes)))) as client:
        yield client
