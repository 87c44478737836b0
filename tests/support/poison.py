"""Poison events: rows written straight into ``events``, behind the API's back.

The API refuses these (or should); a damaged log, an old bug or a hand-made
INSERT may still hold them. Consumers must quarantine their key and go on.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient, TestServer
from nats.js import JetStreamContext

from bench.support import scratch_database
from events.codec import canonical_json, chain_hash
from events.models import Actor
from service.domain.ids import new_key_id
from service.http.app import create_app
from service.http.context import KEYLEDGER
from service.service_keys import issue_service_key
from service.settings import Settings
from service.store.event_store import EventStore
from tests.support.api import indexed
from tests.support.outbox import deleted_at_exit, jetstream, unique_stream_settings

_store = EventStore()
POISON_ACTOR = {"id": "test:poison"}


def generated_data(**overrides: Any) -> dict[str, Any]:
    """The ``data`` of a well-formed ``KeyGenerated`` (a random secret hash, no real secret)."""
    return {
        "name": "injected",
        "type": "secret",
        "environment": "live",
        "scopes": [],
        "allowed_origins": [],
        "metadata": {},
        "secret_hash": secrets.token_hex(32),
        "hint": "sk_live_AAAA…ZZZZ",
        **overrides,
    }


@dataclass(frozen=True, slots=True)
class Injected:
    """A row written by ``inject``."""

    position: int
    key_id: str
    org_id: str
    event_type: str


async def inject(
    conn: asyncpg.Connection,
    org_id: str,
    *,
    event_type: str = "KeyGenerated",
    data: dict[str, Any] | str | None = None,
    key_id: str | None = None,
    stream_version: int = 1,
    occurred_at: str | None = None,
    actor: dict[str, Any] | str = POISON_ACTOR,
) -> Injected:
    """Append one raw row at the log head (``data``/``actor`` as JSON text when a str).

    The hash continues the chain whenever the row can be hashed at all, so
    only the event's content is poison, not the log's integrity.
    """
    key_id = key_id or new_key_id()
    data_text = data if isinstance(data, str) else canonical_json(data or generated_data())
    actor_text = actor if isinstance(actor, str) else canonical_json(actor)
    moment = occurred_at or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    event_id = uuid.uuid4()
    # The instant as the chain hashes it (``format_timestamp``), also for years Python
    # cannot hold: formatted by PostgreSQL, as ``audit_chain`` reads it back.
    hashed_moment = await conn.fetchval(
        """SELECT to_char($1::text::timestamptz AT TIME ZONE 'UTC',
                          'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')""",
        moment,
    )
    async with conn.transaction():
        await _store.lock(conn)
        head = await _store.read_head(conn)
        position = head.position + 1
        row_hash = "f" * 64
        with contextlib.suppress(Exception):
            row_hash = chain_hash(
                head.hash,
                {
                    "event_id": str(event_id),
                    "event_type": event_type,
                    "schema_version": 1,
                    "org_id": org_id,
                    "key_id": key_id,
                    "stream_version": stream_version,
                    "position": position,
                    "occurred_at": hashed_moment,
                    "actor": json.loads(actor_text),
                    "data": json.loads(data_text),
                },
            )
        await conn.execute(
            """INSERT INTO events (position, event_id, event_type, schema_version, org_id,
                   key_id, stream_version, occurred_at, actor, data, hash)
               VALUES ($1, $2, $3, 1, $4, $5, $6, $7::text::timestamptz,
                       $8::json, $9::json, $10)""",
            position,
            event_id,
            event_type,
            org_id,
            key_id,
            stream_version,
            moment,
            actor_text,
            data_text,
            row_hash,
        )
        await _store.notify(conn, position)
    return Injected(position, key_id, org_id, event_type)


def nested(depth: int) -> dict[str, Any]:
    """A metadata object nested ``depth`` levels deep."""
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


@dataclass(frozen=True, slots=True)
class IsolatedApp:
    """A keyledger app on a database of its own (quarantines must not leak into other tests)."""

    client: TestClient
    pool: asyncpg.Pool
    database_url: str
    admin_key: str

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_key}"}


@contextlib.asynccontextmanager
async def isolated_app_with_relay(
    server_url: str, settings: Settings, nats_url: str
) -> AsyncIterator[tuple[IsolatedApp, JetStreamContext, Settings]]:
    """``isolated_app`` relaying to a JetStream stream of its own, deleted at the end.

    Yields the app, a JetStream context, and the settings naming the stream.
    """
    stream = unique_stream_settings(settings)
    async with (
        jetstream(nats_url) as js,
        deleted_at_exit(js, stream.nats_stream),
        isolated_app(
            server_url,
            settings,
            nats_url=nats_url,
            nats_stream=stream.nats_stream,
            nats_subject_prefix=stream.nats_subject_prefix,
        ) as app,
    ):
        yield app, js, stream


@contextlib.asynccontextmanager
async def isolated_app(
    server_url: str, settings: Settings, **changes: object
) -> AsyncIterator[IsolatedApp]:
    """A running app with its own empty database (and ``changes`` to ``settings``)."""
    async with scratch_database(server_url, prefix="keyledger_poison") as url:
        app = create_app(settings.replace(database_url=url, **changes))
        async with TestClient(TestServer(app)) as client:
            pool = client.app[KEYLEDGER].pool
            issued = await issue_service_key(
                pool,
                settings.pepper_bytes,
                name="poison admin",
                scopes=["admin"],
                actor=Actor(id="test"),
            )
            await indexed(client, issued.position)
            yield IsolatedApp(client, pool, url, issued.secret)
