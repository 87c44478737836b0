"""Webhook endpoints in PostgreSQL: the projection of their events, and sealed secrets.

An endpoint's registration and removal are events in the log
(``service.webhooks.registration`` appends them); ``webhook_endpoints`` is
their projection, written by ``project`` in the transaction of the append, so
the API and the dispatcher see an endpoint as soon as its registration
commits (a projection runner would leave a moment in which a just-registered
endpoint is not found). Its signing secret is kept in ``webhook_secrets``,
written in that same transaction, never in the log.

The signing secret is shown once, at registration. keyledger must sign every
delivery with it, so it keeps it in a form it can read back: sealed with
AES-256-GCM under a key derived from the pepper (never the pepper itself),
so a copy of the database alone does not give away any endpoint's secret.
It never appears in a listing, a delivery record or a log line.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from events.codec import format_timestamp, to_domain_event
from events.models import (
    WEBHOOK_STREAM_PREFIX,
    Actor,
    Envelope,
    WebhookRegistered,
    WebhookRemoved,
)
from service.domain.ids import new_ulid
from service.domain.webhooks import DELIVERED_EVENT_TYPES, WebhookState
from service.errors import KeyledgerError

# Every event type but the ones about webhook endpoints themselves (not key events: an
# endpoint is not sent its own registration, nor any other endpoint's).
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SEAL_CONTEXT = b"keyledger webhook signing secrets v1"
_NONCE_BYTES = 12
_COLUMNS = (
    "e.webhook_id, e.org_id, e.url, e.event_types, s.sealed_secret, e.created_at, e.created_by,"
    " e.removed_at, e.removed_by, e.position"
)
_FROM = "webhook_endpoints AS e JOIN webhook_secrets AS s USING (webhook_id)"


def new_webhook_id() -> str:
    """A fresh, time-sortable endpoint id."""
    return WEBHOOK_STREAM_PREFIX + new_ulid()


def is_webhook_id(value: str) -> bool:
    """Whether ``value`` has the shape of an endpoint id."""
    return len(value) == 29 and value.startswith(WEBHOOK_STREAM_PREFIX) and value[3:].isalnum()


class SecretSeal:
    """Seals and opens signing secrets with a key derived from the pepper."""

    def __init__(self, pepper: bytes) -> None:
        self._aead = AESGCM(hmac.new(pepper, _SEAL_CONTEXT, hashlib.sha256).digest())

    def seal(self, webhook_id: str, secret: str) -> bytes:
        """nonce ‖ ciphertext, bound to ``webhook_id`` (a sealed secret cannot be moved)."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, secret.encode(), webhook_id.encode())

    def open(self, webhook_id: str, sealed: bytes) -> str:
        """The secret; ``cryptography.exceptions.InvalidTag`` if it was altered or moved."""
        nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
        return self._aead.decrypt(nonce, ciphertext, webhook_id.encode()).decode()


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A registered webhook endpoint."""

    webhook_id: str
    org_id: str
    url: str
    event_types: tuple[str, ...]
    sealed_secret: bytes
    created_at: datetime
    created_by: Actor
    removed_at: datetime | None
    removed_by: Actor | None
    # The log position of its WebhookRegistered (None: registered before endpoints had events).
    position: int | None = None

    def wants(self, event_type: str) -> bool:
        """Whether this endpoint is sent ``event_type``: one it subscribed to (no list:
        every type), never an event about webhook endpoints themselves."""
        return event_type in self.sent_types()

    def sent_types(self) -> tuple[str, ...]:
        """The event types this endpoint is sent."""
        return self.event_types or DELIVERED_EVENT_TYPES

    def since(self) -> tuple[int, datetime]:
        """(position, instant) after which the log's events are this endpoint's: after its
        ``WebhookRegistered`` (for one registered before endpoints had events: from the
        instant it was created)."""
        if self.position is None:
            return 0, self.created_at
        return self.position, _EPOCH

    def follows(self, envelope: Envelope) -> bool:
        """Whether ``envelope`` is one of this endpoint's events (see ``since``)."""
        position, instant = self.since()
        return envelope.position > position and envelope.occurred_at >= instant

    def state_before_events(self, *, has_events: bool) -> WebhookState | None:
        """Where the decider starts folding the endpoint's stream: nothing for one that
        has its ``WebhookRegistered``; for one registered before endpoints had events
        (``position`` None), its row at version 0, removed only if that was before too
        (after, its stream holds the ``WebhookRemoved``)."""
        if self.position is not None:
            return None
        return WebhookState(
            webhook_id=self.webhook_id,
            org_id=self.org_id,
            url=self.url,
            event_types=self.event_types,
            registered_at=self.created_at,
            removed_at=None if has_events else self.removed_at,
            version=0,
        )

    def public(self) -> dict[str, Any]:
        """The endpoint as the API shows it: never its secret."""
        return {
            "id": self.webhook_id,
            "org_id": self.org_id,
            "url": self.url,
            "event_types": list(self.event_types),
            "created_at": format_timestamp(self.created_at),
            "created_by": self.created_by.model_dump(mode="json"),
            "removed_at": format_timestamp(self.removed_at) if self.removed_at else None,
            "removed_by": self.removed_by.model_dump(mode="json") if self.removed_by else None,
        }


def _endpoint(row: asyncpg.Record) -> Endpoint:
    removed_by = row["removed_by"]
    return Endpoint(
        webhook_id=row["webhook_id"],
        org_id=row["org_id"],
        url=row["url"],
        event_types=tuple(row["event_types"]),
        sealed_secret=bytes(row["sealed_secret"]),
        created_at=row["created_at"],
        created_by=Actor.model_validate_json(row["created_by"]),
        removed_at=row["removed_at"],
        removed_by=Actor.model_validate_json(removed_by) if removed_by else None,
        position=row["position"],
    )


async def project(conn: asyncpg.Connection, envelope: Envelope) -> None:
    """Fold one appended webhook event into ``webhook_endpoints`` (in the append's
    transaction); who registered or removed is the event's actor."""
    event = to_domain_event(envelope)
    actor = envelope.actor.model_dump_json()
    if isinstance(event, WebhookRegistered):
        await conn.execute(
            "INSERT INTO webhook_endpoints (webhook_id, org_id, url, event_types, created_at,"
            " created_by, position) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            event.webhook_id,
            event.org_id,
            event.url,
            list(event.event_types),
            event.occurred_at,
            actor,
            envelope.position,
        )
    elif isinstance(event, WebhookRemoved):
        await conn.execute(
            "UPDATE webhook_endpoints SET removed_at = $2, removed_by = $3"
            " WHERE webhook_id = $1 AND removed_at IS NULL",
            event.webhook_id,
            event.occurred_at,
            actor,
        )
    else:
        raise ValueError(f"{envelope.event_type} is not a webhook endpoint's event")


class WebhookEndpoints:
    """Reads of ``webhook_endpoints``, and the sealed secrets of ``webhook_secrets``."""

    def __init__(self, pool: asyncpg.Pool, pepper: bytes) -> None:
        self.pool = pool
        self.seal = SecretSeal(pepper)

    async def keep_secret(self, conn: asyncpg.Connection, webhook_id: str, secret: str) -> None:
        """Keep ``secret`` sealed for ``webhook_id`` (in the transaction of its registration,
        after ``project``)."""
        await conn.execute(
            "INSERT INTO webhook_secrets (webhook_id, sealed_secret) VALUES ($1, $2)",
            webhook_id,
            self.seal.seal(webhook_id, secret),
        )

    async def find(self, conn: asyncpg.Connection, webhook_id: str) -> Endpoint | None:
        """Endpoint ``webhook_id`` of any org (removed or not), or None."""
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM {_FROM} WHERE e.webhook_id = $1", webhook_id
        )
        return _endpoint(row) if row is not None else None

    async def get(self, org_id: str, webhook_id: str) -> Endpoint:
        """The org's endpoint ``webhook_id`` (removed or not); 404 if it has none."""
        async with self.pool.acquire() as conn:
            endpoint = await self.find(conn, webhook_id)
        if endpoint is None or endpoint.org_id != org_id:
            raise KeyledgerError("webhook_not_found", "no such webhook")
        return endpoint

    async def of_org(self, org_id: str) -> list[Endpoint]:
        """The org's endpoints not removed, newest first."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM {_FROM} WHERE e.org_id = $1 AND e.removed_at IS NULL"
            " ORDER BY e.created_at DESC, e.webhook_id DESC LIMIT 1000",
            org_id,
        )
        return [_endpoint(row) for row in rows]

    async def active(self) -> list[Endpoint]:
        """Every endpoint not removed, of every org: what the dispatcher serves."""
        rows = await self.pool.fetch(f"SELECT {_COLUMNS} FROM {_FROM} WHERE e.removed_at IS NULL")
        return [_endpoint(row) for row in rows]
