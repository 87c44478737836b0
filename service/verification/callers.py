"""Who is calling: service keys in the reserved ``_system`` org (docs/api.md#authentication)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import asyncpg

from service.clock import utc_now
from service.domain import key_material
from service.domain.key_material import secret_digest
from service.domain.orgs import SYSTEM_ORG
from service.domain.state import KeyState
from service.domain.vocabulary import CREDENTIAL
from service.errors import KeyledgerError
from service.store.event_store import EventStore
from service.store.key_registry import KeyRegistry
from service.store.quarantine import is_transient
from service.verification.index import (
    IndexEntry,
    SingleKey,
    VerificationIndex,
    entry_from_state,
)
from service.verification.policy import (
    Requirements,
    Verdict,
    verify_bearer,
    verify_digest,
)
from service.verification.rate_limits import RateLimiter

SERVICE_SCOPES = ("keys:read", "keys:write", "keys:verify", "audit:read", "admin")
_NO_REQUIREMENTS = Requirements()
# Bound on remembered callers: service keys are few; this only caps a pathological case.
_KNOWN_CALLERS_MAX = 1024


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated service key and what it may do."""

    key_id: str
    scopes: frozenset[str]
    # None: every org. Otherwise the orgs named in the key's metadata ``orgs``.
    orgs: frozenset[str] | None
    # HMAC (hex) of the secret presented: a command re-checks it in its transaction.
    secret_hash: str | None = None

    def has_scope(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def can_see_org(self, org_id: str) -> bool:
        """Whether ``org_id`` exists for this caller (else it is 404 ``org_not_found``).

        The ``_system`` org holds the service keys themselves: acting on it,
        reading it included, needs an ``admin`` key without an org list
        (docs/security.md §4). Anything less could mint or revive a key with more
        authority than its own.
        """
        if org_id == SYSTEM_ORG:
            return "admin" in self.scopes and self.orgs is None
        return self.orgs is None or org_id in self.orgs

    def require(self, scope: str) -> None:
        """Refuse with 403 unless the caller holds ``scope``."""
        if not self.has_scope(scope):
            raise KeyledgerError(
                "insufficient_scope",
                f"this service key lacks the {scope!r} scope",
                {"required_scope": scope},
            )


def _plainly_valid(entry: IndexEntry, digest: bytes, now: datetime) -> bool:
    """Whether ``verify_digest`` would find ``entry`` VALID for ``digest`` without counting
    anything: its current secret, active and unexpired, and nothing that needs a check
    of its own (a rate limit, an IP allowlist, an embed key's origin).

    ``digest`` found ``entry`` in the index (an equal key of its dictionary), so the
    plain comparison reveals nothing a timing could.
    """
    key_type, _, status = entry.kind
    extras = entry.extras
    return (
        entry.secret_hash == digest
        and status == "active"
        and key_type == "secret"
        and (entry.expires_at is None or now < entry.expires_at)
        and not extras.rate_limits
        and not extras.allowed_cidrs
    )


class CallerAuthenticator:
    """Turns a presented service-key secret into a ``Caller``, or refuses with 401.

    Service keys are checked against this replica's verification index (no
    database round trip), with the same checks as ``POST /v1/verify``, their
    own rate limit included (429 ``rate_limited``). A secret the index does
    not know is refused from the index alone while it is caught up; only a
    replica still loading or behind the log looks it up in PostgreSQL.
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
        # Callers already authenticated, by secret HMAC, with the index entry they came from.
        self._known: dict[bytes, tuple[IndexEntry, Caller]] = {}

    def recognised(self, secret: str | None, now: datetime | None = None) -> Caller | None:
        """The caller of a secret that authenticated before, if its key has not changed.

        The hot path of every authenticated request: an HMAC and two
        dictionary lookups. Entries are never mutated, and every applied
        event for a key stores a new one, so a rename, disable, revoke or
        rotation of the service key makes this None at once (``authenticate``
        then does the full check). Grace, expiry and the rate limit depend on
        ``now``: they are checked here on every request (a 401/429
        ``KeyledgerError``). None too for anything unusual, ``authenticate``
        judges it. ``now`` defaults to the current instant.
        """
        index = self.index
        if secret is None or index is None or not secret.isascii():
            return None
        digest = secret_digest(self.pepper, secret)
        known = self._known.get(digest)
        if known is None:
            return None
        entry = index.by_secret_hash(digest)
        if entry is not known[0]:
            return None
        now = now or utc_now()
        if _plainly_valid(entry, digest, now):
            return known[1]
        verdict = verify_digest(index, digest, _NO_REQUIREMENTS, now, self.limiter)
        return self._caller(verdict, now, known[1])

    async def authenticate(self, secret: str | None, header: str = "Authorization") -> Caller:
        """The ``Caller`` presenting ``secret``, or a 401 / 429 ``KeyledgerError``.

        ``header`` is where this route reads the key, named in the 401 when none is sent.
        """
        if secret is None:
            shown = "Authorization: Bearer" if header == "Authorization" else f"{header}:"
            raise KeyledgerError("unauthenticated", f"send a service key as '{shown} sk_…'")
        if not CREDENTIAL.matches(secret):
            # Not ASCII (e.g. a raw 0xFF byte, decoded as a lone surrogate): it cannot be
            # hashed, let alone be a key. Refused before anything else looks at it.
            raise KeyledgerError(
                "invalid_api_key", f"the {header} header does not carry a well-formed key"
            )
        recognised = self.recognised(secret)
        if recognised is not None:
            return recognised
        now = utc_now()
        index = self.index
        digest = secret_digest(self.pepper, secret) if index is not None else b""
        if not key_material.is_well_formed(secret):
            raise KeyledgerError(
                "invalid_api_key", f"the {header} header does not carry a well-formed key"
            )
        verdict: Verdict | None = None
        if index is not None:
            verdict = verify_digest(index, digest, _NO_REQUIREMENTS, now, self.limiter)
        if (
            index is None
            or verdict is None
            or (verdict.code == "NOT_FOUND" and not index.caught_up)
        ):
            state = await self._state_from_database(secret, now)
            lookup = SingleKey(entry_from_state(state) if state is not None else None)
            verdict = verify_bearer(
                lookup, self.pepper, secret, _NO_REQUIREMENTS, now, self.limiter
            )
        presented = digest.hex() if digest else key_material.secret_hash(self.pepper, secret)
        caller = self._caller(verdict, now, secret_hash=presented)
        entry = verdict.entry  # not None: ``_caller`` refused a verdict without a key
        if index is not None and entry is not None and entry is index.by_secret_hash(digest):
            if len(self._known) >= _KNOWN_CALLERS_MAX:
                self._known.clear()
            self._known[digest] = (entry, caller)
        return caller

    @staticmethod
    def _caller(
        verdict: Verdict, now: datetime, known: Caller | None = None, secret_hash: str | None = None
    ) -> Caller:
        """The caller a verdict on a service key stands for, or the refusal."""
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
        if known is not None:
            return known
        orgs = (entry.metadata or {}).get("orgs")
        return Caller(
            key_id=entry.key_id,
            scopes=frozenset(entry.scopes),
            orgs=frozenset(orgs) if isinstance(orgs, list) else None,
            secret_hash=secret_hash,
        )

    async def _state_from_database(self, secret: str, now: datetime) -> KeyState | None:
        hashed = key_material.secret_hash(self.pepper, secret)
        async with self.pool.acquire() as conn:
            key_id = await self.registry.find_by_secret_hash(conn, hashed, now)
            if key_id is None or (self.index is not None and key_id in self.index.quarantined):
                return None  # a quarantined service key fails closed (docs/security.md §5)
            try:
                return await self.store.load_state(conn, key_id)
            except Exception as exc:
                if is_transient(exc):
                    raise
                return None  # its log does not fold: refuse rather than guess
