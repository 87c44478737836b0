"""An index entry built straight from a registry snapshot row.

A cold start reads every key from the snapshot: ``entry_from_row`` builds the
entry ``entry_from_state`` would make of the row's state without building the
state first, and most keys (no extras) take a short way.
"""

from __future__ import annotations

import sys
from datetime import datetime

from service.store.registry_snapshot import COLUMN, Row, credits_of, rate_limits_of
from service.verification.entries import (
    NO_EXTRAS,
    IndexEntry,
    Interner,
    KeyExtras,
    build_entry,
    shared_networks,
    shared_rate_limit,
    signing_material,
)

_C = COLUMN  # snapshot row columns, by KeyState field name


def _instant(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


_KEY_ID, _ORG_ID, _NAME, _TYPE, _ENVIRONMENT, _STATUS, _SCOPES, _EXPIRES_AT = (
    _C[name]
    for name in (
        "key_id",
        "org_id",
        "name",
        "type",
        "environment",
        "status",
        "scopes",
        "expires_at",
    )
)
_SECRET_HASH, _VERSION = _C["secret_hash"], _C["version"]
# Columns that are empty (null, [] or {}) for a key with ``NO_EXTRAS``.
_EXTRA_COLUMNS = tuple(
    _C[name]
    for name in (
        "allowed_origins",
        "resource",
        "metadata",
        "rate_limit",
        "previous_secret_hash",
        "previous_valid_until",
        "public_key",
        "rate_limits",
        "credits",
        "credits_version",
        "allowed_cidrs",
        "identity_id",
    )
)


def entry_from_row(row: Row, intern: Interner) -> IndexEntry:
    """The entry ``entry_from_state`` makes of the state a snapshot row holds, built
    straight from the row (a cold start builds a million of them: most keys have no
    extras, and take the short way)."""
    for column in _EXTRA_COLUMNS:
        if row[column]:
            return _entry_with_extras(row, intern)
    entry = IndexEntry()
    entry.key_id = row[_KEY_ID]
    entry.org_id = sys.intern(row[_ORG_ID])
    entry.name = row[_NAME]
    entry.kind = intern(
        (sys.intern(row[_TYPE]), sys.intern(row[_ENVIRONMENT]), sys.intern(row[_STATUS]))
    )
    entry.scopes = intern(tuple(row[_SCOPES]))
    expires_at = row[_EXPIRES_AT]
    entry.expires_at = datetime.fromisoformat(expires_at) if expires_at is not None else None
    digest = row[_SECRET_HASH]
    entry.secret_hash = bytes.fromhex(digest) if digest else None
    entry.version = row[_VERSION]
    entry.extras = NO_EXTRAS
    return entry


def _entry_with_extras(row: Row, intern: Interner) -> IndexEntry:
    limit, previous = row[_C["rate_limit"]], row[_C["previous_secret_hash"]]
    digest = row[_C["secret_hash"]]
    extras = KeyExtras(
        allowed_origins=intern(tuple(row[_C["allowed_origins"]])),
        resource=row[_C["resource"]],
        metadata=row[_C["metadata"]] or None,
        rate_limit=shared_rate_limit(intern, limit[0], limit[1]) if limit else None,
        previous_hash=bytes.fromhex(previous) if previous else None,
        previous_valid_until=_instant(row[_C["previous_valid_until"]]),
        signer=signing_material(
            row[_C["type"]],
            row[_C["algorithm"]],
            row[_C["public_key"]],
            row[_C["previous_public_key"]],
            None,
        ),
        rate_limits=intern(rate_limits_of(row[_C["rate_limits"]])),
        credits=credits_of(row[_C["credits"]]),
        credits_version=row[_C["credits_version"]],
        allowed_cidrs=shared_networks(intern, tuple(row[_C["allowed_cidrs"]])),
        identity_id=row[_C["identity_id"]],
    )
    return build_entry(
        intern,
        row[_C["key_id"]],
        row[_C["org_id"]],
        row[_C["name"]],
        (row[_C["type"]], row[_C["environment"]], row[_C["status"]]),
        tuple(row[_C["scopes"]]),
        _instant(row[_C["expires_at"]]),
        bytes.fromhex(digest) if digest else None,
        row[_C["version"]],
        extras,
    )
