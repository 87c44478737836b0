"""The pepper's fingerprint, kept in the database to refuse a wrong pepper (docs/security.md §7).

Every stored secret hash is HMAC-SHA256(pepper, secret). Started with another
pepper, the service would answer every key ``NOT_FOUND`` while ``/readyz``
said ready. So the first start records HMAC-SHA256(pepper, a fixed label) —
which reveals nothing of the pepper — and every start compares.
"""

from __future__ import annotations

import hashlib
import hmac

import asyncpg

from service.settings import SettingsError

# Changing the label would make every recorded fingerprint a mismatch.
_LABEL = b"keyledger pepper fingerprint v1"

MISMATCH = "KEYLEDGER_PEPPER does not match the one this database was created with"


class PepperMismatch(SettingsError):
    """The configured pepper is not the one the stored secret hashes were made with (exit 2)."""

    def __init__(self) -> None:
        super().__init__(MISMATCH)


def pepper_fingerprint(pepper: bytes) -> str:
    """HMAC-SHA256(pepper, fixed label) as hex: stable per pepper, useless without it."""
    return hmac.new(pepper, _LABEL, hashlib.sha256).hexdigest()


async def check_pepper(conn: asyncpg.Connection, pepper: bytes) -> bool:
    """Record the fingerprint if none is stored (True), else compare; raise on a mismatch."""
    fingerprint = pepper_fingerprint(pepper)
    recorded = await conn.fetchval(
        """INSERT INTO pepper_fingerprint (fingerprint) VALUES ($1)
           ON CONFLICT (singleton) DO NOTHING RETURNING true""",
        fingerprint,
    )
    if recorded:
        return True
    stored = await conn.fetchval("SELECT fingerprint FROM pepper_fingerprint")
    if not hmac.compare_digest(stored.strip(), fingerprint):
        raise PepperMismatch()
    return False
