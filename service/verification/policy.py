"""The verification decision (docs/api.md#post-v1verify), pure: no I/O, no clock of its own.

Check order, the first failing check decides the code:

1. ``MALFORMED`` — the presented credential fails its format: a bearer
   secret's shape or CRC32 checksum (``key_material.is_well_formed``, asked
   only when no key has the secret's HMAC: a key's secret is well formed);
   for a signed request a key id that is not ``key_`` + ULID, a signature
   that is not base64, a method that is not a token, a path not starting
   with ``/`` or a timestamp that is not unix seconds.
2. ``NOT_FOUND`` — no key has this secret's HMAC (compared with
   ``hmac.compare_digest``), or the signature does not hold under the key's
   public key, or the signed timestamp is more than 300 s away from now.
   A secret or public key replaced by a rotation still matches during its
   grace; after it, 3. answers ``REVOKED``. A key in an org the calling
   service key may not see is ``NOT_FOUND`` too.
3. ``REVOKED`` / ``EXPIRED`` / ``DISABLED`` — the key's status at ``now``
   (``expires_at`` in the past is expired even before ``KeyExpired`` is
   written); a rotated-out secret past its grace is ``REVOKED``.
4. ``WRONG_ENVIRONMENT`` — ``environment`` was given and differs.
   ``IP_NOT_ALLOWED`` — the key has ``allowed_cidrs`` and ``ip`` is missing
   or in none of them.
5. ``ORIGIN_NOT_ALLOWED`` — an embed key without an ``origin`` or with one not
   exactly in ``allowed_origins``; or a secret key presented with an origin
   (a browser must never hold a secret key).
6. ``RESOURCE_NOT_ALLOWED`` — an embed key and ``resource`` missing or not
   its one resource.
7. ``INSUFFICIENT_SCOPE`` — a requested scope is not granted (``a:*`` grants
   every scope starting with ``a:``).
8. ``RATE_LIMITED`` — one of the key's named rate limits has no room for
   ``cost``; ``retry_after``. Nothing is counted then (in no limit).
9. ``USAGE_EXCEEDED`` — the key has credits and fewer than ``cost`` are left
   (spent by ``service.verification.credits`` after the checks above: the
   one step that may need the database).
10. ``VALID``, with ``ratelimits`` for a key that has limits and
    ``credits_remaining`` for one with credits.

A key is identified (``key`` in the answer) from step 3 on; before that the
answer says nothing about any key.
"""

from __future__ import annotations

import functools
import hmac
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple, Protocol

from events.codec import format_timestamp
from events.vocabulary import Environment, Status
from service.domain import key_material
from service.domain.ids import is_key_id
from service.domain.key_material import secret_digest
from service.domain.vocabulary import is_unicode
from service.verification.index import IndexEntry
from service.verification.ip_allowlist import address_allowed
from service.verification.rate_limits import LimitState, RateLimiter, Shared
from service.verification.signing import (
    TIMESTAMP_PATTERN,
    decode_signature,
    is_method,
    signature_holds,
    signing_payload,
)

TIMESTAMP_WINDOW_SECONDS = 300

VerifyCode = Literal[
    "VALID",
    "MALFORMED",
    "NOT_FOUND",
    "DISABLED",
    "REVOKED",
    "EXPIRED",
    "ORIGIN_NOT_ALLOWED",
    "RESOURCE_NOT_ALLOWED",
    "INSUFFICIENT_SCOPE",
    "WRONG_ENVIRONMENT",
    "IP_NOT_ALLOWED",
    "RATE_LIMITED",
    "USAGE_EXCEEDED",
]
HTTP_STATUS: dict[VerifyCode, int] = {
    "VALID": 200,
    "MALFORMED": 401,
    "NOT_FOUND": 401,
    "DISABLED": 401,
    "REVOKED": 401,
    "EXPIRED": 401,
    "ORIGIN_NOT_ALLOWED": 403,
    "RESOURCE_NOT_ALLOWED": 403,
    "INSUFFICIENT_SCOPE": 403,
    "WRONG_ENVIRONMENT": 403,
    "IP_NOT_ALLOWED": 403,
    "RATE_LIMITED": 429,
    "USAGE_EXCEEDED": 429,
}
_STATUS_CODES: dict[Status, VerifyCode] = {
    "revoked": "REVOKED",
    "expired": "EXPIRED",
    "disabled": "DISABLED",
}


class KeyLookup(Protocol):
    """Where keys are found: the in-memory index, or one key read from PostgreSQL."""

    def by_secret_hash(self, digest: bytes) -> IndexEntry | None: ...

    def by_key_id(self, key_id: str) -> IndexEntry | None: ...

    def identity_limits(self, entry: IndexEntry) -> Shared | None:
        """The limits ``entry`` shares with the other keys of its identity (None: none)."""
        ...


class Requirements(NamedTuple):
    """What the protected request needs, besides a good credential.

    Named tuples, not frozen dataclasses, for the per-request values here:
    as immutable, and ≈4× cheaper to build on the hot path.
    """

    origin: str | None = None
    resource: str | None = None
    scopes: tuple[str, ...] = ()
    environment: Environment | None = None
    # The client's address, for keys with an IP allowlist.
    ip: str | None = None
    # What the request counts for against rate limits (and credits).
    cost: int = 1


class SignedRequest(NamedTuple):
    """A request signed with a signing key's private key, as presented."""

    key_id: str
    signature: str
    method: str
    path: str
    body: str | None = None
    timestamp: str | None = None


class Verdict(NamedTuple):
    """The answer: a code, and the key once it is identified."""

    code: VerifyCode
    entry: IndexEntry | None = None
    retry_after: int | None = None
    # The key's rate limits after this request (None: the key has none).
    ratelimits: tuple[LimitState, ...] | None = None
    # The key's credits left after this request (None: the key has no credits).
    credits_remaining: int | None = None

    @property
    def valid(self) -> bool:
        return self.code == "VALID"

    def to_json(self) -> dict[str, Any]:
        """``{"valid", "code", "http_status", "key", "retry_after"?, "ratelimits"?, …}``."""
        return self.key_fields() | self.request_fields()

    def key_fields(self) -> dict[str, Any]:
        """What the answer holds for any request with this code on this key."""
        return {
            "valid": self.code == "VALID",
            "code": self.code,
            "http_status": HTTP_STATUS[self.code],
            "key": render_verified_key(self.entry) if self.entry is not None else None,
        }

    def request_fields(self) -> dict[str, Any]:
        """What the answer holds for this request only (after ``key_fields``)."""
        body: dict[str, Any] = {}
        if self.retry_after is not None:
            body["retry_after"] = self.retry_after
        if self.ratelimits is not None:
            body["ratelimits"] = [
                {
                    "name": state.name,
                    "limit": state.limit,
                    "remaining": state.remaining,
                    "reset_at": _instant(state.reset_at),
                }
                for state in self.ratelimits
            ]
        if self.credits_remaining is not None:
            body["credits_remaining"] = self.credits_remaining
        return body


@functools.lru_cache(maxsize=1024)
def _instant(unix_seconds: float) -> str:
    # Window ends repeat for every request of a window: format each once.
    return format_timestamp(datetime.fromtimestamp(unix_seconds, UTC))


def render_verified_key(entry: IndexEntry) -> dict[str, Any]:
    """The key as a verify answer shows it (no secret, no hash, no public key)."""
    return {
        "id": entry.key_id,
        "org_id": entry.org_id,
        "name": entry.name,
        "type": entry.type,
        "environment": entry.environment,
        "scopes": list(entry.scopes),
        "metadata": entry.metadata or {},
        "expires_at": format_timestamp(entry.expires_at) if entry.expires_at else None,
        "identity_id": entry.identity_id,
    }


def scope_granted(granted: tuple[str, ...], requested: str) -> bool:
    """``requested`` is granted exactly or by a ``prefix:*``-style wildcard."""
    if requested in granted:
        return True
    # A loop, not any() over a generator: this runs for every requested scope of a verify.
    for scope in granted:
        if len(scope) > 1 and scope.endswith("*") and requested.startswith(scope[:-1]):
            return True
    return False


def verify_bearer(
    lookup: KeyLookup,
    pepper: bytes,
    secret: str,
    requirements: Requirements,
    now: datetime,
    limiter: RateLimiter | None = None,
    can_see_org: Callable[[str], bool] | None = None,
) -> Verdict:
    """Check a bearer secret (``sk_…`` / ``rk_…``) in the documented order.

    The lookup comes before the format check, with the same verdicts: a digest
    the index holds is a generated secret's (so well formed, checksum
    included), and the shape and checksum (≈ 0.75 µs) only tell ``MALFORMED``
    from ``NOT_FOUND`` for a secret no key has. The length and ASCII test
    first keeps anything else, a lone surrogate included, from the HMAC.
    """
    if len(secret) != key_material.SECRET_LENGTH or not secret.isascii():
        return Verdict("MALFORMED")
    digest = secret_digest(pepper, secret)
    entry = lookup.by_secret_hash(digest)
    if entry is None:
        return Verdict("NOT_FOUND" if key_material.is_well_formed(secret) else "MALFORMED")
    return _verify_entry(lookup, entry, digest, requirements, now, limiter, can_see_org)


def verify_digest(
    lookup: KeyLookup,
    digest: bytes,
    requirements: Requirements,
    now: datetime,
    limiter: RateLimiter | None = None,
    can_see_org: Callable[[str], bool] | None = None,
) -> Verdict:
    """Steps 2–9 for a well-formed bearer secret, given its HMAC ``digest``."""
    entry = lookup.by_secret_hash(digest)
    if entry is None:
        return Verdict("NOT_FOUND")
    return _verify_entry(lookup, entry, digest, requirements, now, limiter, can_see_org)


def _verify_entry(
    lookup: KeyLookup,
    entry: IndexEntry,
    digest: bytes,
    requirements: Requirements,
    now: datetime,
    limiter: RateLimiter | None,
    can_see_org: Callable[[str], bool] | None,
) -> Verdict:
    """Steps 2–9 for the entry ``lookup`` found under ``digest``."""
    if entry.secret_hash is not None and hmac.compare_digest(entry.secret_hash, digest):
        in_grace = True
    elif entry.previous_hash is not None and hmac.compare_digest(entry.previous_hash, digest):
        in_grace = entry.previous_valid_until is not None and now < entry.previous_valid_until
    else:
        return Verdict("NOT_FOUND")
    if can_see_org is not None and not can_see_org(entry.org_id):
        return Verdict("NOT_FOUND")
    return check_key(
        entry,
        requirements,
        now,
        limiter,
        replaced_past_grace=not in_grace,
        shared=lookup.identity_limits(entry) if entry.identity_id is not None else None,
    )


def verify_signed(
    lookup: KeyLookup,
    signed: SignedRequest,
    requirements: Requirements,
    now: datetime,
    limiter: RateLimiter | None = None,
    can_see_org: Callable[[str], bool] | None = None,
) -> Verdict:
    """Check a signed request against a signing key, in the documented order."""
    signature = decode_signature(signed.signature)
    if (
        signature is None
        or not is_key_id(signed.key_id)
        or not is_method(signed.method)
        or not signed.path.startswith("/")
        or not is_unicode(signed.path)
        or (signed.body is not None and not is_unicode(signed.body))
        or (signed.timestamp is not None and not TIMESTAMP_PATTERN.fullmatch(signed.timestamp))
    ):
        return Verdict("MALFORMED")
    entry = lookup.by_key_id(signed.key_id)
    signer = entry.signer if entry is not None else None
    if entry is None or signer is None:
        return Verdict("NOT_FOUND")
    if can_see_org is not None and not can_see_org(entry.org_id):
        return Verdict("NOT_FOUND")
    if (
        signed.timestamp is not None
        and abs(now.timestamp() - int(signed.timestamp)) > TIMESTAMP_WINDOW_SECONDS
    ):
        return Verdict("NOT_FOUND")
    payload = signing_payload(signed.method, signed.path, signed.body, signed.timestamp)
    if signature_holds(signer.verifier, signature, payload):
        past_grace = False
    elif signer.previous_verifier is not None and signature_holds(
        signer.previous_verifier, signature, payload
    ):
        past_grace = entry.previous_valid_until is None or now >= entry.previous_valid_until
    else:
        return Verdict("NOT_FOUND")
    return check_key(
        entry,
        requirements,
        now,
        limiter,
        replaced_past_grace=past_grace,
        shared=lookup.identity_limits(entry) if entry.identity_id is not None else None,
    )


def check_key(
    entry: IndexEntry,
    requirements: Requirements,
    now: datetime,
    limiter: RateLimiter | None = None,
    *,
    replaced_past_grace: bool = False,
    shared: Shared | None = None,
) -> Verdict:
    """Steps 3–9 for a key whose credential has been proven; ``shared``: its identity's
    limits, counted together with the key's own."""
    if replaced_past_grace:
        return Verdict("REVOKED", entry)
    # The entry's slots read once, not through its properties: this runs on every verify.
    key_type, environment, status = entry.kind
    extras = entry.extras
    if status != "active" or (entry.expires_at is not None and entry.expires_at <= now):
        return Verdict(_STATUS_CODES[entry.status_at(now)], entry)
    if requirements.environment is not None and requirements.environment != environment:
        return Verdict("WRONG_ENVIRONMENT", entry)
    if extras.allowed_cidrs and not address_allowed(extras.allowed_cidrs, requirements.ip):
        return Verdict("IP_NOT_ALLOWED", entry)
    if key_type == "embed":
        if requirements.origin is None or requirements.origin not in extras.allowed_origins:
            return Verdict("ORIGIN_NOT_ALLOWED", entry)
        if requirements.resource is None or requirements.resource != extras.resource:
            return Verdict("RESOURCE_NOT_ALLOWED", entry)
    elif key_type == "secret" and requirements.origin is not None:
        return Verdict("ORIGIN_NOT_ALLOWED", entry)
    granted = entry.scopes
    for scope in requirements.scopes:
        if scope not in granted and not scope_granted(granted, scope):
            return Verdict("INSUFFICIENT_SCOPE", entry)
    rate_limits = extras.rate_limits
    if limiter is None or not (rate_limits or shared):
        return Verdict("VALID", entry)
    limits = limiter.take(entry.key_id, rate_limits, requirements.cost, shared)
    if limits.retry_after is not None:
        return Verdict("RATE_LIMITED", entry, limits.retry_after, limits.states)
    return Verdict("VALID", entry, None, limits.states)
