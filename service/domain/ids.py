"""Key identifiers: ``key_`` followed by a 26-character ULID."""

from __future__ import annotations

import re
import secrets
import time

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
KEY_ID_PATTERN = re.compile(r"^key_[0-7][0-9A-HJKMNP-TV-Z]{25}$")


def new_ulid(now_ms: int | None = None) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, Crockford base32."""
    millis = int(time.time() * 1000) if now_ms is None else now_ms
    value = (millis << 80) | secrets.randbits(80)
    chars = []
    for _ in range(26):
        chars.append(CROCKFORD[value & 31])
        value >>= 5
    return "".join(reversed(chars))


def new_key_id() -> str:
    """A fresh, time-sortable key id."""
    return "key_" + new_ulid()


def is_key_id(value: str) -> bool:
    """Whether ``value`` has the shape of a key id."""
    return bool(KEY_ID_PATTERN.match(value))
