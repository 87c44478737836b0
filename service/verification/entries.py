"""One key as the verification index holds it: a compact, immutable entry.

A replica holds every key in memory, so the layout of an entry is most of
what a million keys cost. An ``IndexEntry`` has nine slots:

- the key's id, org, name, scopes, ``expires_at``, secret hash (the raw
  32-byte HMAC, not its hex) and version;
- ``kind``: its (type, environment, status), one tuple shared by every entry
  with the same three (a dozen combinations in all);
- ``extras``: what most keys do not have (allowed origins, resource,
  metadata, rate limits, credits, IP allowlist, identity, previous secret and
  its grace, signing material).
  Every key with none of them shares one ``KeyExtras`` object.

Strings of the vocabulary, org ids, scope tuples and rate limits are shared
(interned) between entries. Reading ``entry.type``, ``entry.rate_limit``…
goes through properties, a few tens of nanoseconds each; the slots they
replace cost 8 bytes per key each (``bench.cold_start`` reports bytes per key).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, TypeVar, cast

from events.models import Credits, NamedRateLimit, RateLimit
from events.vocabulary import TERMINAL_STATUSES, Algorithm, Environment, KeyType, Status
from service.domain.state import KeyState
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


class KeyExtras:
    """What most keys do not have; all keys without any share ``NO_EXTRAS``."""

    __slots__ = (
        "allowed_cidrs",
        "allowed_origins",
        "credits",
        "credits_version",
        "identity_id",
        "metadata",
        "previous_hash",
        "previous_valid_until",
        "rate_limit",
        "rate_limits",
        "resource",
        "signer",
    )

    def __init__(
        self,
        allowed_origins: tuple[str, ...] = (),
        resource: str | None = None,
        metadata: dict[str, Any] | None = None,
        rate_limit: RateLimit | None = None,
        previous_hash: bytes | None = None,
        previous_valid_until: datetime | None = None,
        signer: SigningMaterial | None = None,
        rate_limits: tuple[NamedRateLimit, ...] = (),
        credits: Credits | None = None,
        credits_version: int = 0,
        allowed_cidrs: tuple[Network, ...] = (),
        identity_id: str | None = None,
    ) -> None:
        self.allowed_origins = allowed_origins
        self.resource = resource
        self.metadata = metadata  # None when empty: saves a dict per key
        self.rate_limit = rate_limit
        self.previous_hash = previous_hash  # raw 32-byte HMAC
        self.previous_valid_until = previous_valid_until
        self.signer = signer
        self.rate_limits = rate_limits
        self.credits = credits
        self.credits_version = (
            credits_version  # what a replica's block of credits is checked against
        )
        self.allowed_cidrs = allowed_cidrs  # compiled networks; empty: any address
        self.identity_id = identity_id

    def is_none(self) -> bool:
        """Nothing set: the key can share ``NO_EXTRAS``."""
        return not (
            self.allowed_origins
            or self.resource is not None
            or self.metadata
            or self.rate_limit is not None
            or self.previous_hash is not None
            or self.previous_valid_until is not None
            or self.signer is not None
            or self.rate_limits
            or self.credits is not None
            or self.credits_version
            or self.allowed_cidrs
            or self.identity_id is not None
        )


NO_EXTRAS = KeyExtras()


class IndexEntry:
    """What verification needs to know about one key. Never mutated once stored."""

    __slots__ = (
        "expires_at",
        "extras",
        "key_id",
        "kind",
        "name",
        "org_id",
        "scopes",
        "secret_hash",
        "version",
    )
    # Everything an entry tells, by name (slots and properties alike).
    FIELDS = (
        "key_id", "org_id", "name", "type", "environment", "status", "scopes",
        "allowed_origins", "resource", "metadata", "expires_at", "rate_limit", "secret_hash",
        "previous_hash", "previous_valid_until", "signer", "version", "rate_limits", "credits",
        "credits_version", "allowed_cidrs", "identity_id",
    )  # fmt: skip

    key_id: str
    org_id: str
    name: str
    kind: tuple[KeyType, Environment, Status]
    scopes: tuple[str, ...]
    expires_at: datetime | None
    secret_hash: bytes | None  # raw 32-byte HMAC
    version: int
    extras: KeyExtras

    @property
    def type(self) -> KeyType:
        return self.kind[0]

    @property
    def environment(self) -> Environment:
        return self.kind[1]

    @property
    def status(self) -> Status:
        return self.kind[2]

    @property
    def allowed_origins(self) -> tuple[str, ...]:
        return self.extras.allowed_origins

    @property
    def resource(self) -> str | None:
        return self.extras.resource

    @property
    def metadata(self) -> dict[str, Any] | None:
        return self.extras.metadata

    @property
    def rate_limit(self) -> RateLimit | None:
        return self.extras.rate_limit

    @property
    def previous_hash(self) -> bytes | None:
        return self.extras.previous_hash

    @property
    def previous_valid_until(self) -> datetime | None:
        return self.extras.previous_valid_until

    @property
    def signer(self) -> SigningMaterial | None:
        return self.extras.signer

    @property
    def rate_limits(self) -> tuple[NamedRateLimit, ...]:
        return self.extras.rate_limits

    @property
    def credits(self) -> Credits | None:
        return self.extras.credits

    @property
    def credits_version(self) -> int:
        return self.extras.credits_version

    @property
    def allowed_cidrs(self) -> tuple[Network, ...]:
        return self.extras.allowed_cidrs

    @property
    def identity_id(self) -> str | None:
        return self.extras.identity_id

    def status_at(self, now: datetime) -> Status:
        """Recorded status, or ``expired`` once ``expires_at`` has passed (as KeyState)."""
        status = self.kind[2]
        if status in TERMINAL_STATUSES:
            return status
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return status

    def to_state(self) -> KeyState:
        """The entry as a ``KeyState`` that ``evolve`` can fold the next event into."""
        extras = self.extras
        signer = extras.signer
        return KeyState(
            key_id=self.key_id,
            org_id=self.org_id,
            name=self.name,
            type=self.kind[0],
            environment=self.kind[1],
            status=self.kind[2],
            scopes=self.scopes,
            allowed_origins=extras.allowed_origins,
            resource=extras.resource,
            algorithm=signer.algorithm if signer else None,
            public_key=signer.pem if signer else None,
            secret_hash=self.secret_hash.hex() if self.secret_hash else None,
            hint=None,
            metadata=extras.metadata or {},
            rate_limit=extras.rate_limit,
            created_at=_UNKEPT,
            updated_at=_UNKEPT,
            expires_at=self.expires_at,
            version=self.version,
            previous_secret_hash=extras.previous_hash.hex() if extras.previous_hash else None,
            previous_public_key=signer.previous_pem if signer else None,
            previous_valid_until=extras.previous_valid_until,
            rate_limits=extras.rate_limits,
            credits=extras.credits,
            credits_version=extras.credits_version,
            allowed_cidrs=tuple(str(network) for network in extras.allowed_cidrs),
            identity_id=extras.identity_id,
        )


class Interner:
    """Shares equal immutable values between entries (scopes, orgs, kinds, rate limits)."""

    def __init__(self) -> None:
        self._values: dict[Any, Any] = {}

    def __call__(self, value: Any) -> Any:
        return self._values.setdefault(value, value)


def build_entry(
    share: Interner,
    key_id: str,
    org_id: str,
    name: str,
    kind: tuple[str, str, str],
    scopes: tuple[str, ...],
    expires_at: datetime | None,
    secret_hash: bytes | None,
    version: int,
    extras: KeyExtras,
) -> IndexEntry:
    """An entry of these values, with the shared parts shared through ``share``."""
    entry = IndexEntry()
    entry.key_id = key_id
    entry.org_id = sys.intern(org_id)
    entry.name = name
    entry.kind = share(tuple(_shared(word) for word in kind))
    entry.scopes = share(scopes)
    entry.expires_at = expires_at
    entry.secret_hash = secret_hash
    entry.version = version
    entry.extras = NO_EXTRAS if extras.is_none() else extras
    return entry


def shared_rate_limit(share: Interner, limit: int, window: str) -> RateLimit:
    """The rate limit ``limit`` per ``window``, one object for all keys that have it."""
    shared: RateLimit = share(RateLimit.model_validate({"limit": limit, "window": window}))
    return shared


def entry_from_state(
    state: KeyState, previous: IndexEntry | None = None, intern: Interner | None = None
) -> IndexEntry:
    """An index entry for ``state``; parsed public keys of ``previous`` are reused."""
    share = intern or Interner()
    limit = state.rate_limit
    extras = KeyExtras(
        allowed_origins=share(tuple(state.allowed_origins)),
        resource=state.resource,
        metadata=state.metadata or None,
        rate_limit=shared_rate_limit(share, limit.limit, limit.window) if limit else None,
        previous_hash=(
            bytes.fromhex(state.previous_secret_hash) if state.previous_secret_hash else None
        ),
        previous_valid_until=state.previous_valid_until,
        signer=signing_material(
            state.type,
            state.algorithm,
            state.public_key,
            state.previous_public_key,
            previous.signer if previous else None,
        ),
        rate_limits=share(state.rate_limits),
        credits=state.credits,
        credits_version=state.credits_version,
        allowed_cidrs=shared_networks(share, state.allowed_cidrs),
        identity_id=state.identity_id,
    )
    return build_entry(
        share,
        state.key_id,
        state.org_id,
        state.name,
        (state.type, state.environment, state.status),
        tuple(state.scopes),
        state.expires_at,
        bytes.fromhex(state.secret_hash) if state.secret_hash else None,
        state.version,
        extras,
    )


def shared_networks(share: Interner, cidrs: tuple[str, ...]) -> tuple[Network, ...]:
    """The compiled IP allowlist of ``cidrs`` (empty: any address)."""
    # Compiled once per distinct list: keys of one customer usually share theirs.
    return share(compile_cidrs(cidrs)) if cidrs else ()


def signing_material(
    key_type: str,
    algorithm: str | None,
    public_key: str | None,
    previous_public_key: str | None,
    known: SigningMaterial | None,
) -> SigningMaterial | None:
    """A signing key's parsed public keys (None for other keys); PEMs ``known`` holds
    already parsed are not parsed again."""
    if key_type != "signing" or not public_key:
        return None
    parsed = {}
    if known is not None:
        parsed = {known.pem: known.verifier}
        if known.previous_pem and known.previous_verifier:
            parsed[known.previous_pem] = known.previous_verifier

    def verifier(pem: str) -> PublicKey:
        return parsed.get(pem) or load_public_key(pem)

    return SigningMaterial(
        algorithm=cast(Algorithm, _shared(algorithm or "ed25519")),
        pem=public_key,
        verifier=verifier(public_key),
        previous_pem=previous_public_key,
        previous_verifier=verifier(previous_public_key) if previous_public_key else None,
    )
