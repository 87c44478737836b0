"""Signatures on keyledger's webhook deliveries, for senders and receivers.

Each delivery carries ``Keyledger-Signature: t=<unix seconds>,v1=<hex>``, where
``v1`` is HMAC-SHA256 keyed with the endpoint's signing secret (``whsec_…``)
over ``"<t>.<raw body>"``. A receiver checks it with ``verify_signature``
before trusting the body, and de-duplicates on ``Keyledger-Event-Id``
(delivery is at least once)::

    from keyledger_client.events.webhooks import verify_signature
    if not verify_signature(secret, await request.read(), request.headers["Keyledger-Signature"]):
        return web.Response(status=400)

Only the standard library is used, so receivers need nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "Keyledger-Signature"
EVENT_ID_HEADER = "Keyledger-Event-Id"
# A signature older (or newer) than this is refused: a captured delivery cannot be replayed later.
DEFAULT_TOLERANCE_SECONDS = 300


def signature(secret: str, body: bytes, timestamp: int) -> str:
    """The hex HMAC-SHA256 of ``"<timestamp>.<body>"`` under ``secret``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def signature_header(secret: str, body: bytes, timestamp: int | None = None) -> str:
    """The ``Keyledger-Signature`` value for ``body`` signed now (or at ``timestamp``)."""
    at = int(time.time()) if timestamp is None else timestamp
    return f"t={at},v1={signature(secret, body, at)}"


def verify_signature(
    secret: str,
    body: bytes,
    header: str | None,
    *,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """Whether ``header`` is a valid, recent signature of ``body`` under ``secret``.

    Any ``v1`` entry may match (a header may carry several during a secret
    change); the comparison is constant-time; a malformed header is False.
    """
    if not header or len(header) > 4096:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1":
            candidates.append(value)
    if timestamp is None or not candidates:
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_seconds:
        return False
    expected = signature(secret, body, timestamp)
    return any(
        hmac.compare_digest(expected.encode(), c.encode("utf-8", "replace")) for c in candidates
    )
