"""Verification as a replica serves it: the index, its feed, limits, usage.

The hot path is ``Verifier.verify`` with no ``min_position`` (or one the
index has reached): an HMAC or a signature check, dictionary lookups, a rate
limit counter and a usage note — no database round trip. Only a caller that
asks for a position this replica has not applied waits (≤ 1 s, woken as the
index advances) and then, if still behind, is answered from PostgreSQL.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

import asyncpg

from service.clock import utc_now
from service.domain import key_material
from service.domain.ids import is_key_id
from service.domain.key_material import secret_digest
from service.errors import KeyledgerError
from service.key_usage import UsageRecorder
from service.store.event_store import EventStore
from service.store.key_registry import KeyRegistry
from service.store.quarantine import is_transient
from service.verification.credits import CreditLedger
from service.verification.feed import IndexFeed
from service.verification.index import (
    IndexEntry,
    SingleKey,
    VerificationIndex,
    entry_from_state,
)
from service.verification.policy import (
    KeyLookup,
    Requirements,
    SignedRequest,
    Verdict,
    verify_bearer,
    verify_signed,
)
from service.verification.rate_limits import RateLimiter

MIN_POSITION_WAIT_SECONDS = 1.0
# Passed as "now" to the registry lookup so that a previous secret is found
# whatever its grace; the verdict then decides between valid and REVOKED.
_BEGINNING = datetime(1970, 1, 1, tzinfo=UTC)

Credential = str | SignedRequest


class Verifier:
    """Answers verify requests from this replica's index."""

    def __init__(
        self,
        index: VerificationIndex,
        feed: IndexFeed,
        pool: asyncpg.Pool,
        pepper: bytes,
        limiter: RateLimiter,
        usage: UsageRecorder,
        credits: CreditLedger | None = None,
    ) -> None:
        self.index = index
        self.feed = feed
        self.pool = pool
        self.pepper = pepper
        self.limiter = limiter
        self.usage = usage
        self.credits = credits
        self.store = EventStore()
        self.registry = KeyRegistry()
        # Verdicts by code, exported by /metrics; a dict increment keeps the hot path cheap.
        self.outcomes: Counter[str] = Counter()

    def check(
        self,
        lookup: KeyLookup,
        credential: Credential,
        requirements: Requirements,
        now: datetime,
        can_see_org: Callable[[str], bool] | None = None,
    ) -> Verdict:
        """The verdict for ``credential`` from ``lookup`` (pure apart from the limiter)."""
        if isinstance(credential, SignedRequest):
            return verify_signed(lookup, credential, requirements, now, self.limiter, can_see_org)
        return verify_bearer(
            lookup, self.pepper, credential, requirements, now, self.limiter, can_see_org
        )

    def verify_from_index(
        self,
        credential: Credential,
        requirements: Requirements,
        *,
        min_position: int | None = None,
        can_see_org: Callable[[str], bool] | None = None,
        now: datetime | None = None,
    ) -> Verdict | None:
        """The verdict from the index as it stands (no I/O, no wait), not yet settled.

        None when the index has not reached ``min_position`` yet (``verify`` waits for it).
        ``now`` defaults to the current instant.
        """
        index = self.index
        if index.gap_at is not None:
            raise KeyledgerError(
                "log_gap",
                f"the event log has no event at position {index.gap_at} but has later"
                " ones; this replica refuses to verify until the log is repaired",
                {"missing_position": index.gap_at},
            )
        if min_position is not None and index.position < min_position:
            return None
        return self.check(index, credential, requirements, now or utc_now(), can_see_org)

    async def verify(
        self,
        credential: Credential,
        requirements: Requirements,
        *,
        min_position: int | None = None,
        can_see_org: Callable[[str], bool] | None = None,
        now: datetime | None = None,
    ) -> Verdict:
        """Verify from the index, or honour ``min_position`` first; spend credits; count it.

        ``min_position``: docs/api.md#consistency-min_position. ``now``: the request's
        instant (one clock read per request), the current one when not given.
        """
        now = now or utc_now()
        verdict = self.verify_from_index(
            credential, requirements, min_position=min_position, can_see_org=can_see_org, now=now
        )
        if verdict is None:
            assert min_position is not None  # the only reason for no verdict from the index
            lookup = await self._lookup_at(credential, min_position)
            verdict = self.check(lookup, credential, requirements, utc_now(), can_see_org)
        entry = verdict.entry
        if entry is not None:
            # Only keys with credits make the hot path wait (a block reservation, rarely).
            if verdict.valid and entry.credits is not None:
                verdict = await self._spend_credits(verdict, requirements.cost)
            if verdict.valid:
                self.usage.touch(entry.key_id, now)
            self.usage.counts.count(entry.key_id, verdict.code, now)
        self.outcomes[verdict.code] += 1
        return verdict

    async def _spend_credits(self, verdict: Verdict, cost: int) -> Verdict:
        """A valid verdict for a key with credits, once ``cost`` of them is spent (or not)."""
        entry = verdict.entry
        if self.credits is None or entry is None or entry.credits is None:
            return verdict
        left = await self.credits.spend(entry, cost)
        if left is None:
            return Verdict("USAGE_EXCEEDED", entry, None, verdict.ratelimits, 0)
        return verdict._replace(credits_remaining=left)

    async def _lookup_at(self, credential: Credential, min_position: int) -> KeyLookup:
        async with self.pool.acquire() as conn:
            head = await self.store.head(conn)
        self.index.note_head(head)
        if min_position > head:
            raise KeyledgerError(
                "not_caught_up",
                f"position {min_position} is beyond the log's head ({head})",
                {"min_position": min_position, "head": head},
            )
        if await self.feed.wait_for(min_position, MIN_POSITION_WAIT_SECONDS):
            return self.index
        return SingleKey(await self.entry_from_database(credential), self.index)

    async def entry_from_database(self, credential: Credential) -> IndexEntry | None:
        """The presented key read straight from the log (read-your-writes fallback)."""
        async with self.pool.acquire() as conn:
            if isinstance(credential, SignedRequest):
                key_id = credential.key_id if is_key_id(credential.key_id) else None
            elif key_material.is_well_formed(credential):
                digest = secret_digest(self.pepper, credential)
                key_id = await self.registry.find_by_secret_hash(conn, digest.hex(), _BEGINNING)
            else:
                key_id = None
            if key_id is None or key_id in self.index.quarantined:
                return None  # a quarantined key fails closed here too (docs/security.md §5)
            try:
                state = await self.store.load_state(conn, key_id)
                return entry_from_state(state) if state is not None else None
            except Exception as exc:
                if is_transient(exc):
                    raise
                return None  # its log does not fold: fail closed, never VALID
