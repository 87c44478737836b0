"""Bearer secrets and signing key pairs.

A bearer secret is ``{sk|rk}_{live|test}_`` + 43 base62 characters of 32
random bytes + 6 base62 characters of CRC32 over everything before them. The
checksum lets verification reject typos and garbage without any lookup. Only
HMAC-SHA256(pepper, secret) and a display hint are ever kept.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import zlib
from dataclasses import dataclass
from typing import Protocol, Self

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from events.vocabulary import ENVIRONMENTS, Algorithm, Environment, KeyType

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 43
_CRC_LEN = 6
# Only bearer keys have a secret; signing keys have a key pair instead.
PREFIXES: dict[KeyType, str] = {"secret": "sk", "embed": "rk"}
SECRET_PATTERN = re.compile(
    rf"\A({'|'.join(PREFIXES.values())})_({'|'.join(ENVIRONMENTS)})_[0-9A-Za-z]{{49}}\Z"
)
SECRET_LENGTH = 8 + _BODY_LEN + _CRC_LEN


# Every two-digit base62 string: a secret's body (43 digits) is then 22 divisions and
# lookups rather than 43, and a checksum (6 digits: CRC32 < 62**6) three.
_PAIRS = [a + b for a in BASE62 for b in BASE62]
_PAIR_BASE = 62 * 62


def _base62(value: int, width: int) -> str:
    pairs = []
    while value:
        value, two_digits = divmod(value, _PAIR_BASE)
        pairs.append(_PAIRS[two_digits])
    # The top pair may start with a zero digit: drop it, as one digit at a time would.
    encoded = "".join(reversed(pairs)).lstrip("0")
    if len(encoded) > width:
        raise ValueError("value does not fit")
    return encoded.rjust(width, "0")


def _crc_digits(crc: int) -> str:
    """``_base62(crc, 6)`` for a CRC32 value, table-driven (it runs on every verify)."""
    high, rest = divmod(crc, 62**4)
    middle, low = divmod(rest, 62**2)
    return _PAIRS[high] + _PAIRS[middle] + _PAIRS[low]


def _checksum(text: str) -> str:
    return _crc_digits(zlib.crc32(text.encode()))


def new_secret(key_type: KeyType, environment: Environment) -> str:
    """A fresh bearer secret for a ``secret`` or ``embed`` key."""
    head = f"{PREFIXES[key_type]}_{environment}_" + _base62(
        int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LEN
    )
    return head + _checksum(head)


def is_well_formed(secret: str) -> bool:
    """Format and checksum hold; decided without any lookup."""
    if len(secret) != SECRET_LENGTH or not SECRET_PATTERN.fullmatch(secret):
        return False
    return hmac.compare_digest(_checksum(secret[:-_CRC_LEN]), secret[-_CRC_LEN:])


# HMAC-SHA256 keyed with a pepper, as the two SHA-256 states after the inner and
# outer padded keys (RFC 2104), one pair per pepper (i.e. per configuration).
# Copying these skips OpenSSL 3's per-call HMAC setup: ≈4× cheaper than
# ``hmac.digest`` on the verify hot path; tests pin it to ``hmac``'s result.
class _HashState(Protocol):
    """What ``hashlib.sha256()`` returns, as far as the keyed states use it."""

    def copy(self) -> Self: ...
    def update(self, data: bytes, /) -> None: ...
    def digest(self) -> bytes: ...


_KEYED: dict[bytes, tuple[_HashState, _HashState]] = {}


def _keyed_states(pepper: bytes) -> tuple[_HashState, _HashState]:
    key = hashlib.sha256(pepper).digest() if len(pepper) > 64 else pepper
    key = key.ljust(64, b"\0")
    inner = hashlib.sha256(bytes(byte ^ 0x36 for byte in key))
    outer = hashlib.sha256(bytes(byte ^ 0x5C for byte in key))
    return inner, outer


def secret_digest(pepper: bytes, secret: str) -> bytes:
    """HMAC-SHA256(pepper, secret), raw: the form the verification index is keyed by."""
    states = _KEYED.get(pepper)
    if states is None:
        states = _KEYED[pepper] = _keyed_states(pepper)
    inner, outer = states[0].copy(), states[1].copy()
    inner.update(secret.encode())
    outer.update(inner.digest())
    return outer.digest()


def secret_hash(pepper: bytes, secret: str) -> str:
    """HMAC-SHA256(pepper, secret) as hex: the only stored form of a secret."""
    return secret_digest(pepper, secret).hex()


def hint(secret: str) -> str:
    """First 12 characters, an ellipsis, the last 4."""
    return f"{secret[:12]}…{secret[-4:]}"


@dataclass(frozen=True, slots=True)
class SigningKeyPair:
    """A freshly generated pair; ``private_pem`` is handed out once and dropped."""

    public_pem: str
    private_pem: str


def new_signing_key_pair(algorithm: Algorithm) -> SigningKeyPair:
    """Generate an Ed25519 or RSA-2048 pair. RSA takes tens of ms: call off the loop."""
    private: ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey
    if algorithm == "ed25519":
        private = ed25519.Ed25519PrivateKey.generate()
    elif algorithm == "rsa-2048":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    else:
        raise ValueError(f"unknown algorithm {algorithm!r}")
    private_pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return SigningKeyPair(public_pem=public_pem, private_pem=private_pem)
