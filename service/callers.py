"""Who is calling: service keys in the reserved ``_system`` org (SPEC §8)."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from service.clock import utc_now
from service.domain import key_material
from service.errors import KeyledgerError
from service.store.event_store import EventStore
from service.store.key_registry import KeyRegistry

SYSTEM_ORG = "_system"
SERVICE_SCOPES = ("keys:read", "keys:write", "keys:verify", "audit:read", "admin")


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated service key and what it may do."""

    key_id: str
    scopes: frozenset[str]
    # None: every org. Otherwise the orgs named in the key's metadata ``orgs``.
    orgs: frozenset[str] | None

    def has_scope(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def can_see_org(self, org_id: str) -> bool:
        if org_id == SYSTEM_ORG:
            return "admin" in self.scopes
        return self.orgs is None or org_id in self.orgs

    def require(self, scope: str) -> None:
        """Refuse with 403 unless the caller holds ``scope``."""
        if not self.has_scope(scope):
            raise KeyledgerError(
                "insufficient_scope",
                f"this service key lacks the {scope!r} scope",
                {"required_scope": scope},
            )


class CallerAuthenticator:
    """Turns a presented service-key secret into a ``Caller``, or refuses with 401."""

    def __init__(self, pool: asyncpg.Pool, pepper: bytes) -> None:
        self.pool = pool
        self.pepper = pepper
        self.store = EventStore()
        self.registry = KeyRegistry()

    async def authenticate(self, secret: str | None) -> Caller:
        if secret is None:
            raise KeyledgerError(
                "unauthenticated", "send a service key as 'Authorization: Bearer sk_…'"
            )
        if not key_material.is_well_formed(secret):
            raise KeyledgerError(
                "invalid_api_key", "the Authorization header does not carry a well-formed key"
            )
        now = utc_now()
        hashed = key_material.secret_hash(self.pepper, secret)
        async with self.pool.acquire() as conn:
            key_id = await self.registry.find_by_secret_hash(conn, hashed, now)
            state = await self.store.load_state(conn, key_id) if key_id else None
        if state is None or state.org_id != SYSTEM_ORG:
            raise KeyledgerError("invalid_api_key", "unknown service key")
        status = state.status_at(now)
        if status != "active":
            raise KeyledgerError("api_key_inactive", f"the service key is {status}")
        orgs = state.metadata.get("orgs")
        return Caller(
            key_id=state.key_id,
            scopes=frozenset(state.scopes),
            orgs=frozenset(orgs) if isinstance(orgs, list) else None,
        )
