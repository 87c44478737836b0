"""Walking the hash chain of the whole log (SPEC §5, §6: audit verify).

Every stored event's hash is recomputed from its stored columns and the
previous event's stored hash, and positions must run 1, 2, 3… without a hole.
The walk reads one page at a time, so memory stays bounded on any log size.
Shared by ``GET /v1/audit/verify`` and ``keyledger audit verify``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import asyncpg
from pydantic import ValidationError

from events.codec import GENESIS_HASH, chain_hash, envelope_body
from service.store.event_store import EVENT_COLUMNS, envelope_from_row

_PAGE = 2000


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

    Rows are decoded one by one (not through ``EventStore.read_after``) so that an
    undecodable, tampered row is reported at its own position.
    """
    previous_hash = GENESIS_HASH
    expected = 1
    checked = 0
    while True:
        rows = await conn.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE position >= $1 ORDER BY position LIMIT $2",
            expected,
            page_size,
        )
        for row in rows:
            position = row["position"]
            if position != expected:
                return _broken(checked, expected, f"event {expected} is missing")
            try:
                envelope = envelope_from_row(row)
                recomputed = chain_hash(previous_hash, envelope_body(envelope))
            except (ValidationError, ValueError):
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
