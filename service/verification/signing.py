"""Signed requests (docs/signing.md): the payload a client signs and the signature check.

Pure: no I/O. The payload is ``METHOD:PATH``, then ``:BODY`` when the request
has a JSON object body with at least one non-null field, then ``:TIMESTAMP``
when the request carries one. Ed25519 keys sign the 32-byte SHA-256 digest of
the payload; RSA-2048 keys sign the payload with PKCS#1 v1.5 over SHA-256.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

PublicKey = ed25519.Ed25519PublicKey | rsa.RSAPublicKey
# Longest base64 signature we accept: RSA-2048 signatures are 344 characters.
MAX_SIGNATURE_CHARS = 1024
TIMESTAMP_PATTERN = re.compile(r"\A[0-9]{1,12}\Z")
_METHOD_PATTERN = re.compile(r"\A[A-Za-z]{1,16}\Z")


def canonical_body(raw_body: str | None) -> str | None:
    """The ``BODY`` part of the payload, or None when the body adds nothing.

    Only a JSON object body counts. Its top-level fields whose value is not
    null, sorted by name, as ``name=value`` joined by ``&``: strings as-is,
    numbers and booleans as JSON writes them, objects and arrays as compact JSON
    with sorted keys. ``{}`` or an object of nulls adds nothing.
    """
    if raw_body is None or not raw_body.strip():
        return None
    try:
        parsed = json.loads(raw_body)
        if not isinstance(parsed, dict):
            return None
        parts = [
            f"{name}={_field_text(value)}"
            for name, value in sorted(parsed.items())
            if value is not None
        ]
    except (ValueError, RecursionError):
        # Not JSON, or nested deeper than the parser takes: the body adds nothing.
        return None
    return "&".join(parts) if parts else None


def _field_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    return json.dumps(value)


def signing_payload(
    method: str, path: str, raw_body: str | None = None, timestamp: str | None = None
) -> bytes:
    """The exact bytes a client signs (docs/signing.md §1)."""
    payload = f"{method.upper()}:{path}"
    body = canonical_body(raw_body)
    if body is not None:
        payload += f":{body}"
    if timestamp is not None:
        payload += f":{timestamp}"
    return payload.encode("utf-8")


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


def sign(private_pem: str, payload: bytes) -> str:
    """Sign ``payload`` as a client would (base64); used by tests and benchmarks."""
    private = serialization.load_pem_private_key(private_pem.encode(), password=None)
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.sign(hashlib.sha256(payload).digest())
    elif isinstance(private, rsa.RSAPrivateKey):
        raw = private.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise ValueError("unsupported private key type")
    return base64.b64encode(raw).decode()
