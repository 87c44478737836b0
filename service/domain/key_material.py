"""Bearer secrets and signing key pairs (SPEC §3).

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

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BODY_LEN = 43
_CRC_LEN = 6
PREFIXES = {"secret": "sk", "embed": "rk"}
SECRET_PATTERN = re.compile(r"^(sk|rk)_(live|test)_[0-9A-Za-z]{49}$")
SECRET_LENGTH = 8 + _BODY_LEN + _CRC_LEN


def _base62(value: int, width: int) -> str:
    chars = []
    while value:
        value, digit = divmod(value, 62)
        chars.append(BASE62[digit])
    encoded = "".join(reversed(chars))
    if len(encoded) > width:
        raise ValueError("value does not fit")
    return encoded.rjust(width, "0")


def _checksum(text: str) -> str:
    return _base62(zlib.crc32(text.encode()), _CRC_LEN)


def new_secret(key_type: str, environment: str) -> str:
    """A fresh bearer secret for a ``secret`` or ``embed`` key."""
    head = f"{PREFIXES[key_type]}_{environment}_" + _base62(
        int.from_bytes(secrets.token_bytes(32), "big"), _BODY_LEN
    )
    return head + _checksum(head)


def is_well_formed(secret: str) -> bool:
    """Format and checksum hold; decided without any lookup."""
    if len(secret) != SECRET_LENGTH or not SECRET_PATTERN.match(secret):
        return False
    return hmac.compare_digest(_checksum(secret[:-_CRC_LEN]), secret[-_CRC_LEN:])


def secret_hash(pepper: bytes, secret: str) -> str:
    """HMAC-SHA256(pepper, secret) as hex: the only stored form of a secret."""
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def hint(secret: str) -> str:
    """First 12 characters, an ellipsis, the last 4."""
    return f"{secret[:12]}…{secret[-4:]}"


@dataclass(frozen=True, slots=True)
class SigningKeyPair:
    """A freshly generated pair; ``private_pem`` is handed out once and dropped."""

    public_pem: str
    private_pem: str


def new_signing_key_pair(algorithm: str) -> SigningKeyPair:
    """Generate an Ed25519 or RSA-2048 pair. RSA takes tens of ms: call off the loop."""
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
