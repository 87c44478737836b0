"""Who is calling: service keys in the reserved ``_system`` org (SPEC §8)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from projections.rate_limits import RateLimiter
from projections.verification import Requirements, verify_bearer
from projections.verification_index import SingleKey, VerificationIndex, entry_from_state
from service.clock import utc_now
from service.domain import key_material
from service.domain.orgs import SYSTEM_ORG
from service.domain.state import KeyState
from service.errors import KeyledgerError
from service.store.event_store import EventStore
from service.store.key_registry import KeyRegistry

SERVICE_SCOPES = ("keys:read", "keys:write", "keys:verify", "audit:read", "admin")
_NO_REQUIREMENTS = Requirements()


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
    """Turns a presented service-key secret into a ``Caller``, or refuses with 401.

    Service keys are checked against this replica's verification index (no
    database round trip), with the same checks as ``POST /v1/verify``, their
    own rate limit included (429 ``rate_limited``). A key the index does not
    know yet, e.g. created a moment ago through another replica, is looked up
    in PostgreSQL: a miss costs two queries, a hit none.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        pepper: bytes,
        index: VerificationIndex | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.pool = pool
        self.pepper = pepper
        self.index = index
        self.limiter = limiter
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
        verdict = None
        if self.index is not None:
            verdict = verify_bearer(
                self.index, self.pepper, secret, _NO_REQUIREMENTS, now, self.limiter
            )
        if verdict is None or verdict.code == "NOT_FOUND":
            state = await self._state_from_database(secret, now)
            lookup = SingleKey(entry_from_state(state) if state is not None else None)
            verdict = verify_bearer(
                lookup, self.pepper, secret, _NO_REQUIREMENTS, now, self.limiter
            )
        entry = verdict.entry
        if entry is None or entry.org_id != SYSTEM_ORG:
            raise KeyledgerError("invalid_api_key", "unknown service key")
        if verdict.code == "RATE_LIMITED":
            raise KeyledgerError(
                "rate_limited",
                "this service key is over its rate limit",
                {"retry_after": verdict.retry_after},
            )
        if not verdict.valid:
            raise KeyledgerError("api_key_inactive", f"the service key is {entry.status_at(now)}")
        orgs = (entry.metadata or {}).get("orgs")
        return Caller(
            key_id=entry.key_id,
            scopes=frozenset(entry.scopes),
            orgs=frozenset(orgs) if isinstance(orgs, list) else None,
        )

    async def _state_from_database(self, secret: str, now: datetime) -> KeyState | None:
        hashed = key_material.secret_hash(self.pepper, secret)
        async with self.pool.acquire() as conn:
            key_id = await self.registry.find_by_secret_hash(conn, hashed, now)
            return await self.store.load_state(conn, key_id) if key_id else None
