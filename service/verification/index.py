"""The verification index: every key a replica can verify, in memory.

Two dictionaries: secret hash → entry (current secrets, and previous secrets
after a rotation, kept so that a rotated-out secret answers ``REVOKED`` once
its grace ends) and key id → entry (every key; signing keys are looked up by
id). Entries are compact ``__slots__`` objects with shared (interned) scope
tuples, org ids and rate limits, so a million keys fit in a few hundred MB.

Events are folded with the decider's ``evolve``: the index converts an entry
back to a ``KeyState``, lets ``evolve`` apply the event, and stores the
result. The lifecycle rules live in one place only.

The index is applied strictly in log order: ``offer`` applies an envelope only
when its position is exactly one past the last applied position, so a gap is
always noticed (and filled from PostgreSQL by the feed).

An event the index cannot apply (it does not decode, ``evolve`` refuses it)
quarantines its key: the key leaves the index, so verification fails closed
for it (``NOT_FOUND``, never ``VALID``), its later events are skipped, and
the position moves on for every other key (docs/security.md §5).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar, cast

from events.codec import to_domain_event
from events.models import Credits, Envelope, KeyEvent, NamedRateLimit, RateLimit
from events.vocabulary import TERMINAL_STATUSES, Algorithm, Environment, KeyType, Status
from service.domain.decider import evolve
from service.domain.state import KeyState
from service.store.event_store import UnreadableEvent
from service.store.quarantine import INDEX_CONSUMER, QuarantinedKey, set_aside
from service.verification.ip_allowlist import Network, compile_cidrs
from service.verification.signing import PublicKey, load_public_key

# KeyState fields the index does not keep (they never affect verification) are
# filled with this neutral instant when an entry is turned back into a state.
_UNKEPT = datetime(1970, 1, 1, tzinfo=UTC)

Word = TypeVar("Word", bound=str)


def _shared(word: Word) -> Word:
    """One string object per word of the vocabulary for all entries (rows read from
    PostgreSQL bring fresh copies); ``sys.intern`` returns the same value, typed ``str``."""
    return cast(Word, sys.intern(word))


class Offer(Enum):
    """What ``VerificationIndex.offer`` did with an envelope."""

    APPLIED = "applied"
    SET_ASIDE = "set_aside"  # the position moved on, but the event's key was quarantined
    STALE = "stale"  # at or before the applied position: already in the index
    GAP = "gap"  # beyond applied + 1: something in between is missing


class SigningMaterial:
    """A signing key's public keys, parsed once when the key is indexed."""

    __slots__ = ("algorithm", "pem", "previous_pem", "previous_verifier", "verifier")

    def __init__(
        self,
        algorithm: Algorithm,
        pem: str,
        verifier: PublicKey,
        previous_pem: str | None,
        previous_verifier: PublicKey | None,
    ) -> None:
        self.algorithm = algorithm
        self.pem = pem
        self.verifier = verifier
        self.previous_pem = previous_pem
        self.previous_verifier = previous_verifier


class IndexEntry:
    """What verification needs to know about one key. Never mutated once stored."""

    __slots__ = (
        "allowed_cidrs",
        "allowed_origins",
        "credits",
        "credits_version",
        "environment",
        "expires_at",
        "identity_id",
        "key_id",
        "metadata",
        "name",
        "org_id",
        "previous_hash",
        "previous_valid_until",
        "rate_limit",
        "rate_limits",
        "resource",
        "scopes",
        "secret_hash",
        "signer",
        "status",
        "type",
        "version",
    )

    key_id: str
    org_id: str
    name: str
    type: KeyType
    environment: Environment
    status: Status
    scopes: tuple[str, ...]
    allowed_origins: tuple[str, ...]
    resource: str | None
    metadata: dict[str, Any] | None  # None when empty: saves a dict per key
    expires_at: datetime | None
    rate_limit: RateLimit | None
    secret_hash: bytes | None  # raw 32-byte HMAC
    previous_hash: bytes | None
    previous_valid_until: datetime | None
    signer: SigningMaterial | None
    version: int
    # Usage limits and grouping (changes after issue): shared tuples, compiled networks.
    rate_limits: tuple[NamedRateLimit, ...]
    credits: Credits | None
    credits_version: int  # what a replica's block of credits is checked against
    allowed_cidrs: tuple[Network, ...]  # empty: any address
    identity_id: str | None

    def status_at(self, now: datetime) -> Status:
        """Recorded status, or ``expired`` once ``expires_at`` has passed (as KeyState)."""
        if self.status in TERMINAL_STATUSES:
            return self.status
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return self.status

    def to_state(self) -> KeyState:
        """The entry as a ``KeyState`` that ``evolve`` can fold the next event into."""
        signer = self.signer
        return KeyState(
            key_id=self.key_id,
            org_id=self.org_id,
            name=self.name,
            type=self.type,
            environment=self.environment,
            status=self.status,
            scopes=self.scopes,
            allowed_origins=self.allowed_origins,
            resource=self.resource,
            algorithm=signer.algorithm if signer else None,
            public_key=signer.pem if signer else None,
            secret_hash=self.secret_hash.hex() if self.secret_hash else None,
            hint=None,
            metadata=self.metadata or {},
            rate_limit=self.rate_limit,
            created_at=_UNKEPT,
            updated_at=_UNKEPT,
            expires_at=self.expires_at,
            version=self.version,
            previous_secret_hash=self.previous_hash.hex() if self.previous_hash else None,
            previous_public_key=signer.previous_pem if signer else None,
            previous_valid_until=self.previous_valid_until,
            rate_limits=self.rate_limits,
            credits=self.credits,
            credits_version=self.credits_version,
            allowed_cidrs=tuple(str(network) for network in self.allowed_cidrs),
            identity_id=self.identity_id,
        )


class _Interner:
    """Shares equal immutable values between entries (scopes, orgs, rate limits)."""

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}

    def __call__(self, value: Any) -> Any:
        return self._values.setdefault(value, value)


def entry_from_state(
    state: KeyState, previous: IndexEntry | None = None, intern: _Interner | None = None
) -> IndexEntry:
    """An index entry for ``state``; parsed public keys of ``previous`` are reused."""
    share = intern or _Interner()
    entry = IndexEntry()
    entry.key_id = state.key_id
    entry.org_id = sys.intern(state.org_id)
    entry.name = state.name
    entry.type = _shared(state.type)
    entry.environment = _shared(state.environment)
    entry.status = _shared(state.status)
    entry.scopes = share(tuple(state.scopes))
    entry.allowed_origins = share(tuple(state.allowed_origins))
    entry.resource = state.resource
    entry.metadata = state.metadata or None
    entry.expires_at = state.expires_at
    entry.rate_limit = (
        share(RateLimit(limit=state.rate_limit.limit, window=state.rate_limit.window))
        if state.rate_limit
        else None
    )
    entry.secret_hash = bytes.fromhex(state.secret_hash) if state.secret_hash else None
    entry.previous_hash = (
        bytes.fromhex(state.previous_secret_hash) if state.previous_secret_hash else None
    )
    entry.previous_valid_until = state.previous_valid_until
    entry.signer = _signing_material(state, previous.signer if previous else None)
    entry.version = state.version
    entry.rate_limits = share(state.rate_limits)
    entry.credits = state.credits
    entry.credits_version = state.credits_version
    entry.allowed_cidrs = share(compile_cidrs(state.allowed_cidrs)) if state.allowed_cidrs else ()
    entry.identity_id = state.identity_id
    return entry


def _signing_material(state: KeyState, known: SigningMaterial | None) -> SigningMaterial | None:
    if state.type != "signing" or not state.public_key:
        return None
    parsed = {}
    if known is not None:
        parsed = {known.pem: known.verifier}
        if known.previous_pem and known.previous_verifier:
            parsed[known.previous_pem] = known.previous_verifier

    def verifier(pem: str) -> PublicKey:
        return parsed.get(pem) or load_public_key(pem)

    previous = state.previous_public_key
    return SigningMaterial(
        algorithm=_shared(state.algorithm or "ed25519"),
        pem=state.public_key,
        verifier=verifier(state.public_key),
        previous_pem=previous,
        previous_verifier=verifier(previous) if previous else None,
    )


class VerificationIndex:
    """All keys of the log up to ``position``, looked up by secret hash or key id."""

    def __init__(self) -> None:
        self._by_id: dict[str, IndexEntry] = {}
        self._by_hash: dict[bytes, IndexEntry] = {}
        self._intern = _Interner()
        self.position = 0
        # The highest log position this replica has heard of (notifications, JetStream, reads).
        self.head_seen = 0
        # The position PostgreSQL's log lacks while a later one exists: a hole no append
        # can leave (positions are dense under the append lock), so a row written by hand.
        # Events past it never apply here, so a revocation behind it would be missed:
        # verification fails closed while it lasts (``Verifier.verify``).
        self.gap_at: int | None = None
        # Set by the feed once the whole log has been loaded and is being followed.
        self.following = False
        # Keys set aside (never verified, later events skipped), and those not yet persisted.
        self.quarantined: dict[str, QuarantinedKey] = {}
        self.unsaved_quarantines: list[QuarantinedKey] = []
        # Told of every event applied, in position order (the live event stream's fan-out).
        self.on_applied: Callable[[Envelope], None] | None = None

    def __len__(self) -> int:
        return len(self._by_id)

    @property
    def lag(self) -> int:
        """Positions heard of but not yet applied."""
        return max(0, self.head_seen - self.position)

    @property
    def caught_up(self) -> bool:
        """Whether a miss here is an answer: loaded, followed, and nothing heard but unapplied.

        While this holds, an unknown secret is unknown to the whole log as far as
        this replica can tell, so it is refused without asking PostgreSQL (a flood
        of random keys must not become a flood of queries, docs/security.md §4). A key made
        through another replica a moment ago is found as soon as its notification
        arrives, within milliseconds.
        """
        return self.following and self.head_seen <= self.position

    def note_head(self, position: int) -> None:
        """Remember that the log has reached at least ``position``."""
        if position > self.head_seen:
            self.head_seen = position

    def by_secret_hash(self, digest: bytes) -> IndexEntry | None:
        """The key whose current or previous secret has this HMAC."""
        return self._by_hash.get(digest)

    def by_key_id(self, key_id: str) -> IndexEntry | None:
        """The key with this id."""
        return self._by_id.get(key_id)

    def offer(self, envelope: Envelope) -> Offer:
        """Apply ``envelope`` if it is the next position; say what happened."""
        if envelope.position <= self.position:
            return Offer.STALE
        if envelope.position != self.position + 1:
            return Offer.GAP
        outcome = Offer.APPLIED
        key_id = envelope.key_id
        if key_id in self.quarantined:
            outcome = Offer.SET_ASIDE
        else:
            try:
                self.apply_event(to_domain_event(envelope))
            except Exception as exc:  # whatever this one event makes decoding or evolve raise
                self.set_aside(key_id, envelope.org_id, envelope.position, envelope.event_type, exc)
                outcome = Offer.SET_ASIDE
        self.position = envelope.position
        if outcome is Offer.APPLIED and self.on_applied is not None:
            self.on_applied(envelope)
        return outcome

    def offer_unreadable(self, row: UnreadableEvent) -> Offer:
        """Take the place of a log row that does not decode: its key is set aside."""
        if row.position <= self.position:
            return Offer.STALE
        if row.position != self.position + 1:
            return Offer.GAP
        if row.key_id not in self.quarantined:
            self.set_aside(row.key_id, row.org_id, row.position, row.event_type, row.error)
        self.position = row.position
        return Offer.SET_ASIDE

    def set_aside(
        self, key_id: str, org_id: str, position: int, event_type: str, failure: Exception
    ) -> None:
        """Quarantine a key: drop it from the index (verification fails closed) for good."""
        old = self._by_id.pop(key_id, None)
        if old is not None:
            for digest in (old.secret_hash, old.previous_hash):
                if digest is not None and self._by_hash.get(digest) is old:
                    del self._by_hash[digest]
        entry = set_aside(
            INDEX_CONSUMER,
            key_id=key_id,
            org_id=org_id,
            position=position,
            event_type=event_type,
            failure=failure,
        )
        self.quarantined[key_id] = entry
        self.unsaved_quarantines.append(entry)

    def apply_event(self, event: KeyEvent) -> None:
        """Fold one domain event into the key's entry (position bookkeeping is ``offer``'s)."""
        old = self._by_id.get(event.key_id)
        state = evolve(old.to_state() if old is not None else None, event)
        self.put(entry_from_state(state, old, self._intern))

    def put(self, entry: IndexEntry) -> None:
        """Store ``entry``, replacing the key's previous one and its secret hashes."""
        old = self._by_id.get(entry.key_id)
        if old is not None:
            for digest in (old.secret_hash, old.previous_hash):
                if digest is not None and digest not in (entry.secret_hash, entry.previous_hash):
                    self._by_hash.pop(digest, None)
        self._by_id[entry.key_id] = entry
        for digest in (entry.secret_hash, entry.previous_hash):
            if digest is not None:
                self._by_hash[digest] = entry


class SingleKey:
    """A lookup over at most one key (read from PostgreSQL), shaped like the index."""

    def __init__(self, entry: IndexEntry | None) -> None:
        self.entry = entry

    def by_secret_hash(self, digest: bytes) -> IndexEntry | None:
        """The key if ``digest`` is its current or previous secret's HMAC."""
        entry = self.entry
        if entry is not None and digest in (entry.secret_hash, entry.previous_hash):
            return entry
        return None

    def by_key_id(self, key_id: str) -> IndexEntry | None:
        """The key if it has this id."""
        return self.entry if self.entry is not None and self.entry.key_id == key_id else None
