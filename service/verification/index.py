"""The verification index: every key a replica can verify, in memory.

Two dictionaries: secret hash → entry (current secrets, and previous secrets
after a rotation, kept so that a rotated-out secret answers ``REVOKED`` once
its grace ends) and key id → entry (every key; signing keys are looked up by
id). Entries are compact (``service.verification.entries``: nine slots, shared
kinds, scopes, orgs and rate limits, and what most keys lack in one shared
object), so a million keys fit in a few hundred MB.

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

from collections.abc import Callable
from enum import Enum

from events.codec import to_domain_event
from events.models import (
    Envelope,
    IdentityConfigured,
    LogEvent,
    WebhookRegistered,
    WebhookRemoved,
    identity_stream_id,
)
from service.domain.decider import evolve
from service.store.event_store import UnreadableEvent
from service.store.quarantine import INDEX_CONSUMER, QuarantinedKey, set_aside
from service.store.snapshot_chunks import Chunk
from service.store.snapshot_rows import SnapshotRefused
from service.verification.entries import (
    IndexEntry,
    Interner,
    SigningMaterial,
    entry_from_state,
)
from service.verification.rate_limits import Shared
from service.verification.snapshot_entries import load_chunk

__all__ = [
    "IndexEntry",
    "Offer",
    "SigningMaterial",
    "SingleKey",
    "VerificationIndex",
    "entry_from_state",
]


class Offer(Enum):
    """What ``VerificationIndex.offer`` did with an envelope."""

    APPLIED = "applied"
    SET_ASIDE = "set_aside"  # the position moved on, but the event's key was quarantined
    STALE = "stale"  # at or before the applied position: already in the index
    GAP = "gap"  # beyond applied + 1: something in between is missing


class VerificationIndex:
    """All keys of the log up to ``position``, looked up by secret hash or key id."""

    def __init__(self) -> None:
        self._by_id: dict[str, IndexEntry] = {}
        self._by_hash: dict[bytes, IndexEntry] = {}
        self._intern = Interner()
        # Identity stream id -> the rate limits its keys share (configured identities only).
        self.identities: dict[str, Shared] = {}
        self.position = 0
        # The highest log position this replica has heard of (notifications, JetStream, reads).
        self.head_seen = 0
        # The position PostgreSQL's log lacks while a later one exists: a hole no append
        # can leave (positions are dense under the append lock), so a row written by hand.
        # Events past it never apply here, so a revocation behind it would be missed:
        # verification fails closed while it lasts (``Verifier.verify``).
        self.gap_at: int | None = None
        # Set by the feed once it has brought the index up to the log head at start
        # (from a snapshot and the log after it, or the whole log): /readyz waits for it.
        self.loaded = False
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

    def identity_limits(self, entry: IndexEntry) -> Shared | None:
        """The limits ``entry`` shares with its identity's other keys (None: none)."""
        if entry.identity_id is None:
            return None
        return self.identities.get(identity_stream_id(entry.org_id, entry.identity_id))

    def load_identities(self, configured: list[IdentityConfigured]) -> None:
        """Take identities as they stood at a snapshot's position (a cold start)."""
        for event in configured:
            self.identities[event.key_id] = (event.key_id, tuple(event.rate_limits))

    def load_chunk(self, chunk: Chunk) -> None:
        """Add the keys of a snapshot chunk (a cold start, before ``start_at``).

        A chunk that does not make entries raises ``SnapshotRefused``: the caller
        then ``clear``s the index and folds the log instead.
        """
        if self.position:
            raise RuntimeError("only an index that has applied nothing takes snapshot chunks")
        try:
            load_chunk(chunk, self._intern, self._by_id, self._by_hash)
        except Exception as exc:  # whatever a damaged chunk makes building an entry raise
            raise SnapshotRefused(f"a chunk does not make entries ({type(exc).__name__})") from None

    def start_at(self, position: int, quarantined: list[QuarantinedKey]) -> None:
        """Finish loading a snapshot: it stood at ``position``, with these keys set aside."""
        for entry in quarantined:
            self.quarantined[entry.key_id] = entry
        self.unsaved_quarantines.extend(quarantined)
        self.position = position
        self.note_head(position)

    def clear(self) -> None:
        """Forget every key, back to an empty index at position 0 (a refused snapshot)."""
        self._by_id.clear()
        self._by_hash.clear()
        self.identities.clear()
        self.quarantined.clear()
        self.unsaved_quarantines.clear()
        self.position = 0

    def offer(self, envelope: Envelope, event: LogEvent | None = None) -> Offer:
        """Apply ``envelope`` if it is the next position; say what happened.

        ``event`` is its domain event when already decoded (by its writer, in this
        process), else it is decoded here."""
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
                self.apply_event(event if event is not None else to_domain_event(envelope))
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

    def apply_event(self, event: LogEvent) -> None:
        """Fold one domain event into the key's entry, or the identity's limits; a webhook
        endpoint's is ignored (position bookkeeping is ``offer``'s)."""
        if isinstance(event, IdentityConfigured):
            if event.key_id != identity_stream_id(event.org_id, event.identity_id):
                raise ValueError("IdentityConfigured on another stream than its identity's")
            self.identities[event.key_id] = (event.key_id, tuple(event.rate_limits))
            return
        if isinstance(event, WebhookRegistered | WebhookRemoved):
            return  # a webhook endpoint's: nothing a verification reads
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

    def __init__(
        self, entry: IndexEntry | None, identities: VerificationIndex | None = None
    ) -> None:
        self.entry = entry
        # Where the identities' limits are known (the index, which holds them all).
        self.identities = identities

    def identity_limits(self, entry: IndexEntry) -> Shared | None:
        """The identity's limits as the index knows them."""
        return self.identities.identity_limits(entry) if self.identities is not None else None

    def by_secret_hash(self, digest: bytes) -> IndexEntry | None:
        """The key if ``digest`` is its current or previous secret's HMAC."""
        entry = self.entry
        if entry is not None and digest in (entry.secret_hash, entry.previous_hash):
            return entry
        return None

    def by_key_id(self, key_id: str) -> IndexEntry | None:
        """The key if it has this id."""
        return self.entry if self.entry is not None and self.entry.key_id == key_id else None
