"""Signed requests (docs/signing.md): the signature check.

Pure: no I/O. The payload (``keyledger_client.signing``, shared with the client)
is ``METHOD:PATH``, then ``:BODY`` when the request has a JSON object body with at
least one non-null field, then ``:TIMESTAMP`` when the request carries one. Ed25519
keys sign the 32-byte SHA-256 digest of the payload; RSA-2048 keys sign the payload
with PKCS#1 v1.5 over SHA-256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

# The payload is the contract both sides compute: one definition, the client's.
from keyledger_client.signing import canonical_body, sign, signing_payload

PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey
# Longest base64 signature we accept: RSA-2048 signatures are 344 characters.
MAX_SIGNATURE_CHARS = 1024
TIMESTAMP_PATTERN = re.compile(r"\A[0-9]{1,12}\Z")
_METHOD_PATTERN = re.compile(r"\A[A-Za-z]{1,16}\Z")


def is_method(method: str) -> bool:
    """An HTTP method token (letters only)."""
    return _METHOD_PATTERN.fullmatch(method) is not None


def decode_signature(signature: str) -> bytes | None:
    """The signature bytes from standard base64, or None when it is not base64."""
    if not signature or len(signature) > MAX_SIGNATURE_CHARS:
        return None
    try:
        return base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        return None


def load_public_key(pem: str) -> PublicKey:
    """Parse a SubjectPublicKeyInfo PEM once, so requests never re-parse it."""
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        raise ValueError("unsupported public key type")
    return key


def signature_holds(public_key: PublicKey, signature: bytes, payload: bytes) -> bool:
    """Whether ``signature`` is ``public_key``'s signature over ``payload``."""
    try:
        if isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, hashlib.sha256(payload).digest())
        else:
            public_key.verify(signature, payload, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


__all__ = [
    "MAX_SIGNATURE_CHARS",
    "TIMESTAMP_PATTERN",
    "PublicKey",
    "canonical_body",
    "decode_signature",
    "is_method",
    "load_public_key",
    "sign",
    "signature_holds",
    "signing_payload",
]
