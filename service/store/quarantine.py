"""Quarantine: the keys a consumer of the log has set aside (docs/security.md §5).

A consumer (a projection, the outbox relay, a replica's verification index)
that meets an event it cannot apply records the key here and goes on with
every other key; it skips that key's later events, which cannot be applied
on top of a state it never had. One poison event then costs one key of one
consumer, never the whole pipeline.

Two kinds of failure must never be confused. An error that belongs to the
event (it does not decode, the database refuses its row) quarantines the
key. An error that says nothing about the event (the database connection
dropped, a lock timed out, a deadlock) is retried: quarantining on it would
set aside every key of a batch because PostgreSQL restarted.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import pydantic
import structlog
from asyncpg import exceptions as pg

from events.codec import format_timestamp
from service.log_config import redact

log = structlog.get_logger(__name__)
# Quarantines in /readyz and /metrics are per consumer; the index one is per replica.
INDEX_CONSUMER = "verification_index"
_REASON_MAX = 300

# Errors that say nothing about the event being applied: retry, never quarantine.
_TRANSIENT: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    MemoryError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    pg.PostgresConnectionError,  # 08: the connection
    pg.TransactionRollbackError,  # 40: serialization failure, deadlock
    pg.InsufficientResourcesError,  # 53: disk full, out of memory, too many connections
    pg.OperatorInterventionError,  # 57: statement timeout, shutdown, cancel
    pg.ObjectNotInPrerequisiteStateError,  # 55: lock not available
    pg.InvalidTransactionStateError,  # 25: an aborted transaction
    pg.SyntaxOrAccessError,  # 42: a missing table or a privilege: ours to fix, not the event's
)


def is_transient(exc: BaseException) -> bool:
    """True when ``exc`` is about the database or the connection, not about the event."""
    return isinstance(exc, _TRANSIENT)


def storable(text: str) -> str:
    """``text`` with what PostgreSQL ``text`` cannot hold (NUL, lone surrogates) escaped."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() or ch in "\t\n\r" else f"\\u{ord(ch):04x}" for ch in text)


def describe_failure(exc: BaseException) -> str:
    """Why an event could not be applied, without echoing its data (and never a secret)."""
    if isinstance(exc, pydantic.ValidationError):
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'event'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        text = f"does not decode ({problems})"
    elif isinstance(exc, pg.PostgresError):
        text = f"database refused it: {type(exc).__name__} {exc.sqlstate}: {exc.args[0]}"
    else:
        text = f"{type(exc).__name__}: {exc}"
    scrubbed = redact(None, "", {"reason": text})["reason"]
    return storable(scrubbed[:_REASON_MAX])


@dataclass(frozen=True, slots=True)
class QuarantinedKey:
    """One key set aside by one consumer, at the first event it could not apply."""

    consumer: str
    key_id: str
    org_id: str
    position: int
    event_type: str
    reason: str
    quarantined_at: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        """As shown on the key's view (``quarantined.<consumer>``)."""
        return {
            "position": self.position,
            "event_type": self.event_type,
            "reason": self.reason,
            "quarantined_at": (
                format_timestamp(self.quarantined_at) if self.quarantined_at else None
            ),
        }


def set_aside(
    consumer: str,
    *,
    key_id: str,
    org_id: str,
    position: int,
    event_type: str,
    failure: BaseException | str,
) -> QuarantinedKey:
    """The quarantine of a key, logged once (the reason, not the event's data)."""
    reason = failure if isinstance(failure, str) else describe_failure(failure)
    entry = QuarantinedKey(consumer, key_id, org_id, position, event_type, reason)
    log.warning(
        "event_quarantined",
        consumer=consumer,
        key_id=storable(key_id),
        org_id=storable(org_id),
        position=position,
        event_type=storable(event_type),
        reason=reason,
    )
    return entry


def _entry(row: asyncpg.Record) -> QuarantinedKey:
    return QuarantinedKey(
        row["consumer"],
        row["key_id"],
        row["org_id"],
        row["position"],
        row["event_type"],
        row["reason"],
        row["quarantined_at"],
    )


_COLUMNS = "consumer, key_id, org_id, position, event_type, reason, quarantined_at"


class QuarantineLog:
    """The ``quarantined_keys`` table."""

    async def record(self, conn: asyncpg.Connection, entries: Iterable[QuarantinedKey]) -> None:
        """Persist quarantines; a key already set aside by that consumer keeps its first one."""
        rows = [
            (
                e.consumer,
                storable(e.key_id),
                storable(e.org_id),
                e.position,
                storable(e.event_type),
                storable(e.reason),
            )
            for e in entries
        ]
        if rows:
            await conn.executemany(
                """INSERT INTO quarantined_keys
                       (consumer, key_id, org_id, position, event_type, reason)
                   VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (consumer, md5(key_id)) DO NOTHING""",
                rows,
            )

    async def replace(
        self, conn: asyncpg.Connection, consumer: str, entries: Iterable[QuarantinedKey]
    ) -> None:
        """Make ``entries`` the whole quarantine of ``consumer`` (a rebuild's outcome)."""
        await conn.execute("DELETE FROM quarantined_keys WHERE consumer = $1", consumer)
        await self.record(conn, entries)

    async def of_consumer(
        self, conn: asyncpg.Connection, consumer: str
    ) -> dict[str, QuarantinedKey]:
        """Every key ``consumer`` has set aside, by key id."""
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM quarantined_keys WHERE consumer = $1", consumer
        )
        return {row["key_id"]: _entry(row) for row in rows}

    async def of_key(self, conn: asyncpg.Connection, key_id: str) -> list[QuarantinedKey]:
        """Every consumer's quarantine of one key."""
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM quarantined_keys WHERE key_id = $1 ORDER BY consumer", key_id
        )
        return [_entry(row) for row in rows]

    async def overview(
        self, conn: asyncpg.Connection, *, named: int = 20
    ) -> tuple[dict[str, int], list[QuarantinedKey]]:
        """Keys set aside per consumer, and the first ``named`` of them (by position)."""
        counts = await conn.fetch(
            "SELECT consumer, count(*) AS keys FROM quarantined_keys GROUP BY consumer"
        )
        first = await conn.fetch(
            f"SELECT {_COLUMNS} FROM quarantined_keys ORDER BY position, consumer LIMIT $1", named
        )
        return {row["consumer"]: row["keys"] for row in counts}, [_entry(r) for r in first]
