"""Signed requests: the payload both sides compute, and ``sign_request`` for callers.

A signing key's holder sends ``X-API-Key: <key id>``, ``X-API-Signature`` and,
for replay protection, ``X-API-Timestamp``. The signed payload is
``METHOD:PATH``, then ``:BODY`` when the request has a JSON object body with at
least one non-null field, then ``:TIMESTAMP`` when the request carries one.
Ed25519 keys sign the 32-byte SHA-256 digest of the payload; RSA-2048 keys sign
the payload with PKCS#1 v1.5 over SHA-256. The keyledger server checks
signatures with these very functions, so the two cannot drift apart.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

__all__ = ["canonical_body", "sign", "sign_request", "signing_payload"]


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
    """The exact bytes a client signs (docs/signing.md)."""
    payload = f"{method.upper()}:{path}"
    body = canonical_body(raw_body)
    if body is not None:
        payload += f":{body}"
    if timestamp is not None:
        payload += f":{timestamp}"
    return payload.encode("utf-8")


def sign(private_pem: str, payload: bytes) -> str:
    """``payload`` signed with a PKCS#8 PEM private key (Ed25519 or RSA), as base64."""
    private = serialization.load_pem_private_key(private_pem.encode(), password=None)
    if isinstance(private, ed25519.Ed25519PrivateKey):
        raw = private.sign(hashlib.sha256(payload).digest())
    elif isinstance(private, rsa.RSAPrivateKey):
        raw = private.sign(payload, padding.PKCS1v15(), hashes.SHA256())
    else:
        raise ValueError("unsupported private key type: keyledger signs with Ed25519 or RSA")
    return base64.b64encode(raw).decode()


def _raw_body(body: str | bytes | Mapping[str, Any] | None) -> str | None:
    if body is None or isinstance(body, str):
        return body
    if isinstance(body, bytes):
        return body.decode("utf-8")
    return json.dumps(dict(body))


# What a signed request's parts must look like for keyledger to verify it: an HTTP method
# (RFC 9110's token), a path as sent on the wire (printable ASCII from "/"), a key id.
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_PATH = re.compile(r"/[\x21-\x7e]*")
_KEY_ID = re.compile(r"key_[0-7][0-9A-HJKMNP-TV-Z]{25}")


def _check_request(method: str, path: str, key_id: str) -> None:
    """ValueError for a request no signature of which could verify (arguments swapped, a
    full URL for the path…), before anything is signed. The messages quote no value."""
    if not _METHOD.fullmatch(method):
        raise ValueError("method must be an HTTP method such as GET or POST")
    if not _PATH.fullmatch(path):
        raise ValueError(
            "path must start with / and be the path (and ?query) as sent, percent-encoded, "
            "without the scheme and host"
        )
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError("key_id must be a signing key's id: key_ and a 26-character ULID")


def sign_request(
    method: str,
    path: str,
    body: str | bytes | Mapping[str, Any] | None,
    private_key_pem: str,
    key_id: str,
    *,
    timestamp: bool | int = True,
) -> dict[str, str]:
    """The headers that sign one request: ``X-API-Key``, ``X-API-Signature``, ``X-API-Timestamp``.

    ``path`` is the path with its ``?query`` exactly as sent; ``body`` the raw body
    as sent (a mapping is taken as ``json.dumps`` of it: send that same text).
    ``timestamp=True`` signs the current unix time (checked within ±300 s by the
    server), an ``int`` signs that time, ``False`` signs none (no replay protection).
    ``ValueError`` for a ``method`` that is no HTTP method, a ``path`` not starting with
    ``/`` (a full URL, say) or a ``key_id`` that is no key id.
    """
    _check_request(method, path, key_id)
    stamp: str | None = None
    if timestamp is True:
        stamp = str(int(time.time()))
    elif timestamp is not False:
        stamp = str(int(timestamp))
    payload = signing_payload(method, path, _raw_body(body), stamp)
    headers = {"X-API-Key": key_id, "X-API-Signature": sign(private_key_pem, payload)}
    if stamp is not None:
        headers["X-API-Timestamp"] = stamp
    return headers
