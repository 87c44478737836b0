"""A keyledger relaying to a stream of its own, as environment variables for a child process
that uses the client (docs examples, example services)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from pathlib import Path

from keyledger_client.events import nats_servers
from service.settings import Settings
from tests.support.poison import IsolatedApp, isolated_app_with_relay

ROOT = Path(__file__).resolve().parents[2]


@contextlib.asynccontextmanager
async def client_environment(
    server_url: str, settings: Settings, nats_url: str
) -> AsyncIterator[tuple[IsolatedApp, dict[str, str]]]:
    """The app, and what the banner exports for the client: ``KEYLEDGER_API_URL``,
    ``KEYLEDGER_SERVICE_KEY`` (admin), ``KEYLEDGER_NATS_*``."""
    async with isolated_app_with_relay(server_url, settings, nats_url) as (app, _, stream):
        yield (
            app,
            {
                "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
                "PYTHONPATH": str(ROOT),
                "KEYLEDGER_API_URL": str(app.client.make_url("")).rstrip("/"),
                "KEYLEDGER_SERVICE_KEY": app.admin_key,
                "KEYLEDGER_NATS_URL": nats_servers(nats_url)[0],
                "KEYLEDGER_NATS_STREAM": stream.nats_stream,
                "KEYLEDGER_NATS_SUBJECT_PREFIX": stream.nats_subject_prefix,
            },
        )
