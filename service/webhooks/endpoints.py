"""Webhook endpoints in PostgreSQL: registration, removal, listing, and sealed secrets.

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
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from events.codec import format_timestamp
from events.models import Actor
from service.domain.ids import new_ulid
from service.errors import KeyledgerError

SECRET_PREFIX = "whsec_"
_SEAL_CONTEXT = b"keyledger webhook signing secrets v1"
_NONCE_BYTES = 12
_COLUMNS = (
    "webhook_id, org_id, url, event_types, sealed_secret, created_at, created_by,"
    " removed_at, removed_by"
)


def new_webhook_id() -> str:
    """A fresh, time-sortable endpoint id."""
    return "wh_" + new_ulid()


def is_webhook_id(value: str) -> bool:
    """Whether ``value`` has the shape of an endpoint id."""
    return len(value) == 29 and value.startswith("wh_") and value[3:].isalnum()


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

    def wants(self, event_type: str) -> bool:
        """Whether this endpoint subscribed to ``event_type`` (no list: every type)."""
        return not self.event_types or event_type in self.event_types

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
    )


class WebhookEndpoints:
    """The ``webhook_endpoints`` table."""

    def __init__(self, pool: asyncpg.Pool, pepper: bytes) -> None:
        self.pool = pool
        self.seal = SecretSeal(pepper)

    async def register(
        self, org_id: str, url: str, event_types: tuple[str, ...], actor: Actor, now: datetime
    ) -> tuple[Endpoint, str]:
        """A new endpoint and its signing secret (the only time it is handed out)."""
        webhook_id = new_webhook_id()
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        row = await self.pool.fetchrow(
            f"INSERT INTO webhook_endpoints ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7,"
            f" NULL, NULL) RETURNING {_COLUMNS}",
            webhook_id,
            org_id,
            url,
            list(event_types),
            self.seal.seal(webhook_id, secret),
            now,
            actor.model_dump_json(),
        )
        return _endpoint(row), secret

    async def remove(self, org_id: str, webhook_id: str, actor: Actor, now: datetime) -> Endpoint:
        """Mark the endpoint removed (a second removal changes nothing); 404 if unknown."""
        row = await self.pool.fetchrow(
            "UPDATE webhook_endpoints SET removed_at = $3, removed_by = $4"
            " WHERE org_id = $1 AND webhook_id = $2 AND removed_at IS NULL"
            f" RETURNING {_COLUMNS}",
            org_id,
            webhook_id,
            now,
            actor.model_dump_json(),
        )
        return _endpoint(row) if row is not None else await self.get(org_id, webhook_id)

    async def get(self, org_id: str, webhook_id: str) -> Endpoint:
        """The org's endpoint ``webhook_id`` (removed or not); 404 if it has none."""
        row = await self.pool.fetchrow(
            f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE org_id = $1 AND webhook_id = $2",
            org_id,
            webhook_id,
        )
        if row is None:
            raise KeyledgerError("webhook_not_found", "no such webhook")
        return _endpoint(row)

    async def of_org(self, org_id: str) -> list[Endpoint]:
        """The org's endpoints not removed, newest first."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE org_id = $1 AND removed_at IS NULL"
            " ORDER BY created_at DESC, webhook_id DESC LIMIT 1000",
            org_id,
        )
        return [_endpoint(row) for row in rows]

    async def active(self) -> list[Endpoint]:
        """Every endpoint not removed, of every org: what the dispatcher serves."""
        rows = await self.pool.fetch(
            f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE removed_at IS NULL"
        )
        return [_endpoint(row) for row in rows]
