"""Walking the hash chain of the whole log (docs/events.md#the-hash-chain, ``audit verify``).

Every stored event's hash is recomputed from its stored columns and the
previous event's stored hash, and positions must run 1, 2, 3… without a hole.
The walk reads one page at a time, so memory stays bounded on any log size.
Shared by ``GET /v1/audit/verify`` and ``keyledger audit verify``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import asyncpg

from events.codec import GENESIS_HASH, chain_hash, envelope_body
from events.models import Envelope
from service.store.event_rows import stored_body

_PAGE = 2000
# The columns of ``envelope_body``, as stored. The instant is formatted by PostgreSQL
# exactly as ``format_timestamp`` does (for every year the driver can read, and for
# the ones it cannot), so a row whose timestamp is past 9999 can still be checked.
_HASHED_COLUMNS = (
    "position, event_id::text AS event_id, event_type, schema_version, org_id, key_id,"
    " stream_version,"
    """ to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS occurred_at,"""
    " actor, data, hash"
)


@dataclass(frozen=True, slots=True)
class ChainReport:
    """The outcome of a walk: ``broken_at`` is the first position that does not hold."""

    ok: bool
    events: int
    broken_at: int | None = None
    reason: str | None = None

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ok": self.ok, "events": self.events, "broken_at": self.broken_at}
        if not self.ok:
            body["reason"] = self.reason
        return body


def _broken(events: int, position: int, reason: str) -> ChainReport:
    return ChainReport(ok=False, events=events, broken_at=position, reason=reason)


async def verify_chain(conn: asyncpg.Connection, page_size: int = _PAGE) -> ChainReport:
    """Recompute every hash of the log in position order; stop at the first break.

    The hash is recomputed from the stored columns as they are, not from a
    decoded envelope: the chain says whether the log is what was written, and
    a row whose content is poison (docs/security.md §5: ``actor`` or ``data`` not an
    object, an unknown type, NUL in a name) but whose hash links still
    verifies. Consumers quarantine such rows; the chain is not their concern.
    A row whose stored JSON cannot even be hashed is a break at its position.
    """
    previous_hash = GENESIS_HASH
    expected = 1
    checked = 0
    while True:
        rows = await conn.fetch(
            f"SELECT {_HASHED_COLUMNS} FROM events WHERE position >= $1 ORDER BY position LIMIT $2",
            expected,
            page_size,
        )
        for row in rows:
            position = row["position"]
            if position != expected:
                return _broken(checked, expected, f"event {expected} is missing")
            try:
                recomputed = chain_hash(previous_hash, stored_body(row))
            except ValueError:  # JSON that does not parse or encode (UnicodeError is one)
                return _broken(checked, position, f"event {position} cannot be decoded")
            stored = row["hash"].strip()
            if recomputed != stored:
                return _broken(
                    checked,
                    position,
                    f"event {position}'s hash does not match its content and the previous hash",
                )
            previous_hash = stored
            expected += 1
            checked += 1
        if len(rows) < page_size:
            return ChainReport(ok=True, events=checked)


def walk_chain(envelopes: Iterable[Envelope]) -> ChainReport:
    """``verify_chain`` over envelopes in position order, from the first one (a log held
    in memory, or what a reader fetched): dense positions, each hash linking to the last.
    """
    previous_hash = GENESIS_HASH
    checked = 0
    for expected, envelope in enumerate(envelopes, start=1):
        if envelope.position != expected:
            return _broken(checked, expected, f"event {expected} is missing")
        if chain_hash(previous_hash, envelope_body(envelope)) != envelope.hash:
            return _broken(
                checked,
                expected,
                f"event {expected}'s hash does not match its content and the previous hash",
            )
        previous_hash = envelope.hash
        checked += 1
    return ChainReport(ok=True, events=checked)
