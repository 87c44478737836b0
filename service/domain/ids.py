"""Key identifiers: ``key_`` followed by a 26-character ULID."""

from __future__ import annotations

import secrets
import time

from service.domain.vocabulary import KEY_ID

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
# Anchored with \A…\Z: whole-string even for a caller that uses ``.match``.
KEY_ID_PATTERN = KEY_ID.regex


# Every two-character Crockford string, by the 10 bits it encodes: a ULID is then 13
# masks and lookups rather than 26 (one per GenerateKey).
_PAIRS = [a + b for a in CROCKFORD for b in CROCKFORD]


def new_ulid(now_ms: int | None = None) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, Crockford base32."""
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    value = (millis << 80) | secrets.randbits(80)
    pairs = []
    for _ in range(13):
        pairs.append(_PAIRS[value & 1023])
        value >>= 10
    return "".join(reversed(pairs))


def new_key_id() -> str:
    """A fresh, time-sortable key id."""
    return "key_" + new_ulid()


def is_key_id(value: object) -> bool:
    """Whether ``value`` has the shape of a key id (as a whole: no trailing newline)."""
    return KEY_ID.matches(value)
