"""The event store: the append-only, hash-chained log in PostgreSQL.

Appends are serialized by one transaction-scoped advisory lock. That one
decision gives three guarantees at once: positions are dense (1, 2, 3…), the
hash chain always links to the true previous event, and an event at position
N is committed before any transaction can take position N+1, so readers in
position order never skip an event that commits late. The price is that
appends do not run in parallel; each holds the lock for one short
transaction.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar
from uuid import uuid4

import asyncpg

from events.codec import GENESIS_HASH, canonical_json, decode_event, seal, to_domain_event
from events.models import Actor, DomainEvent, Envelope, KeyEvent
from service.domain.decider import evolve
from service.domain.state import KeyState
from service.errors import KeyledgerError
from service.store.quarantine import is_transient

LOG_LOCK = 0x6B65796C_0002
NOTIFY_CHANNEL = "keyledger_events"

# Every column of an event, in the order ``row_of`` writes and ``envelope_from_row`` reads.
EVENT_COLUMNS = (
    "position, event_id, event_type, schema_version, org_id, key_id, stream_version,"
    " occurred_at, actor, data, hash"
)
# The columns ``read_events_after`` reads, in the order ``_logged_event`` unpacks them.
_EVENT_ONLY_COLUMNS = "position, event_type, schema_version, key_id, org_id, occurred_at, data"
_raw_decode = json.JSONDecoder().raw_decode
_Decoded = TypeVar("_Decoded")
_validate_envelope: Callable[[dict[str, Any]], Envelope] = (
    Envelope.__pydantic_validator__.validate_python
)


def _json_value(text: str) -> Any:
    """``json.loads`` for a ``json`` column, minus its whitespace checks around
    the document (a measurable share of folding a long log). ``append`` writes
    canonical JSON, which has none; PostgreSQL refuses anything after it."""
    try:
        return _raw_decode(text)[0]
    except ValueError:
        return json.loads(text)  # leading whitespace (a row not written by us)


class LoggedEvent(NamedTuple):
    """A domain event and its position in the log: what projections fold."""

    position: int
    event: KeyEvent


class UnreadableEvent(NamedTuple):
    """A row of the log that does not decode: who it is about, and the error.

    Consumers quarantine its key (``service.store.quarantine``) rather than halt.
    """

    position: int
    key_id: str
    org_id: str
    event_type: str
    error: Exception


def _logged_event(row: asyncpg.Record) -> LoggedEvent:
    position, event_type, schema_version, key_id, org_id, occurred_at, data = row
    return LoggedEvent(
        position,
        decode_event(
            event_type,
            schema_version,
            key_id=key_id,
            org_id=org_id,
            occurred_at=occurred_at,
            data=_json_value(data),
        ),
    )


def envelope_from_row(row: asyncpg.Record) -> Envelope:
    """An ``events`` row as an envelope."""
    # One validation of the whole envelope (actor included) rather than the
    # actor on its own and then the envelope: a third less time per row.
    return _validate_envelope(
        {
            "event_id": row["event_id"],
            "event_type": row["event_type"],
            "schema_version": row["schema_version"],
            "org_id": row["org_id"],
            "key_id": row["key_id"],
            "stream_version": row["stream_version"],
            "position": row["position"],
            "occurred_at": row["occurred_at"],
            "actor": _json_value(row["actor"]),
            "data": _json_value(row["data"]),
            "hash": row["hash"],
        }
    )


def fold_envelopes(envelopes: Sequence[Envelope], state: KeyState | None = None) -> KeyState | None:
    """A key's state from its envelopes, remembering the last global position."""
    for envelope in envelopes:
        state = evolve(state, to_domain_event(envelope))
    if state is not None and envelopes:
        state = state.with_changes(position=envelopes[-1].position)
    return state


@dataclass(slots=True)
class LogHead:
    """The last position and hash of the log, carried through a batch of appends."""

    position: int
    hash: str


def row_of(envelope: Envelope) -> tuple[Any, ...]:
    """An envelope as an ``events`` row, in ``EVENT_COLUMNS`` order (for INSERT or COPY)."""
    return (
        envelope.position,
        envelope.event_id,
        envelope.event_type,
        envelope.schema_version,
        envelope.org_id,
        envelope.key_id,
        envelope.stream_version,
        envelope.occurred_at,
        canonical_json(envelope.actor.model_dump(mode="json")),
        canonical_json(envelope.data),
        envelope.hash,
    )


class EventStore:
    """Appends to and reads from the ``events`` table."""

    async def lock(self, conn: asyncpg.Connection, wait_seconds: float | None = None) -> None:
        """Take the append lock for the rest of ``conn``'s transaction.

        With ``wait_seconds``, waiting longer than that raises
        ``asyncpg.LockNotAvailableError`` (advisory locks honour ``lock_timeout``),
        so one stuck transaction cannot stall every writer. The setting stays
        for the rest of the transaction (one round trip for both statements).
        """
        if wait_seconds is None:
            await conn.execute("SELECT pg_advisory_xact_lock($1)", LOG_LOCK)
            return
        milliseconds = max(1, round(wait_seconds * 1000))  # 0 would mean "wait forever"
        await conn.execute(
            f"SET LOCAL lock_timeout = {milliseconds:d}; SELECT pg_advisory_xact_lock({LOG_LOCK:d})"
        )

    async def append(
        self,
        conn: asyncpg.Connection,
        events: Sequence[DomainEvent],
        *,
        actor: Actor,
        expected_version: int,
        head: LogHead | None = None,
    ) -> list[Envelope]:
        """Append ``events`` to one key's stream. Call inside a transaction after ``lock``.

        ``expected_version`` is the stream version the events were decided
        against; the unique (key_id, stream_version) constraint is the backstop.
        A caller appending several times in one transaction passes the ``head``
        from ``read_head`` (it is advanced here) and calls ``notify`` once at
        the end; without one, the head is read and listeners are notified here.
        """
        standalone = head is None
        if head is None:
            head = await self.read_head(conn)
        position, previous_hash = head.position, head.hash
        sealed = []
        version = expected_version
        for event in events:
            position += 1
            version += 1
            envelope = seal(
                event,
                event_id=uuid4(),
                stream_version=version,
                position=position,
                actor=actor,
                previous_hash=previous_hash,
            )
            try:
                await conn.execute(
                    f"INSERT INTO events ({EVENT_COLUMNS})"
                    " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
                    *row_of(envelope),
                )
            except asyncpg.UniqueViolationError as exc:
                raise KeyledgerError(
                    "version_mismatch", "the key changed concurrently; retry"
                ) from exc
            previous_hash = envelope.hash
            sealed.append(envelope)
        head.position, head.hash = position, previous_hash
        if sealed and standalone:
            await self.notify(conn, position)
        return sealed

    async def read_head(self, conn: asyncpg.Connection) -> LogHead:
        """The log's last position and hash (0 and the genesis hash when empty)."""
        row = await conn.fetchrow(
            "SELECT position, hash FROM events ORDER BY position DESC LIMIT 1"
        )
        return LogHead(row["position"], row["hash"]) if row else LogHead(0, GENESIS_HASH)

    async def notify(self, conn: asyncpg.Connection, position: int) -> None:
        """Tell listeners (relay, projections, indexes) the log reached ``position``.

        Delivered at commit, so a listener never reads ahead of what is visible."""
        await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, str(position))

    async def load_stream(self, conn: asyncpg.Connection, key_id: str) -> list[Envelope]:
        """Every event of one key, in stream order."""
        rows = await conn.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE key_id = $1 ORDER BY stream_version", key_id
        )
        return [envelope_from_row(r) for r in rows]

    async def load_state(self, conn: asyncpg.Connection, key_id: str) -> KeyState | None:
        """The current state of one key, or None when it does not exist."""
        return fold_envelopes(await self.load_stream(conn, key_id))

    async def read_after(
        self, conn: asyncpg.Connection, position: int, limit: int = 1000
    ) -> list[Envelope]:
        """Up to ``limit`` events after ``position``, in position order."""
        rows = await conn.fetch(
            f"SELECT {EVENT_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2",
            position,
            limit,
        )
        return [envelope_from_row(r) for r in rows]

    async def read_events_after(
        self, conn: asyncpg.Connection, position: int, limit: int = 1000
    ) -> list[LoggedEvent | UnreadableEvent]:
        """Like ``read_envelopes_after``, but only the domain events and their positions.

        Actor, hash and ids are neither fetched nor decoded, and no envelope
        is built: for readers that fold events (projections, rebuilds), this
        is about half the cost of ``read_after``. A row that does not decode
        is returned as an ``UnreadableEvent`` in its place.
        """
        return await self._read_tolerantly(
            conn, _EVENT_ONLY_COLUMNS, _logged_event, position, limit
        )

    async def read_envelopes_after(
        self, conn: asyncpg.Connection, position: int, limit: int = 1000
    ) -> list[Envelope | UnreadableEvent]:
        """Like ``read_after``, with an ``UnreadableEvent`` for each row that does not decode.

        For consumers that must go on past a poison event (the outbox relay,
        the verification index) rather than fail the whole page.
        """
        return await self._read_tolerantly(conn, EVENT_COLUMNS, envelope_from_row, position, limit)

    async def _read_tolerantly(
        self,
        conn: asyncpg.Connection,
        columns: str,
        decode: Callable[[asyncpg.Record], _Decoded],
        position: int,
        limit: int,
    ) -> list[_Decoded | UnreadableEvent]:
        try:
            rows = await conn.fetch(
                f"SELECT {columns} FROM events WHERE position > $1 ORDER BY position LIMIT $2",
                position,
                limit,
            )
        except Exception as exc:
            if is_transient(exc):
                raise
            # The driver itself could not decode a row (e.g. a timestamp past year
            # 9999): read the page again row by row to find which.
            return await self._read_row_by_row(conn, columns, decode, position, limit)
        decoded: list[_Decoded | UnreadableEvent] = []
        for row in rows:
            try:
                decoded.append(decode(row))
            except Exception as exc:  # anything a row can make decoding raise
                decoded.append(await self._unreadable(conn, row["position"], exc))
        return decoded

    async def _read_row_by_row(
        self,
        conn: asyncpg.Connection,
        columns: str,
        decode: Callable[[asyncpg.Record], _Decoded],
        position: int,
        limit: int,
    ) -> list[_Decoded | UnreadableEvent]:
        positions = await conn.fetch(
            "SELECT position FROM events WHERE position > $1 ORDER BY position LIMIT $2",
            position,
            limit,
        )
        decoded: list[_Decoded | UnreadableEvent] = []
        for (at,) in positions:
            try:
                row = await conn.fetchrow(f"SELECT {columns} FROM events WHERE position = $1", at)
                decoded.append(decode(row))
            except Exception as exc:
                if is_transient(exc):
                    raise
                decoded.append(await self._unreadable(conn, at, exc))
        return decoded

    async def _unreadable(
        self, conn: asyncpg.Connection, position: int, error: Exception
    ) -> UnreadableEvent:
        """The identity columns of a row that does not decode (plain text, always readable)."""
        row = await conn.fetchrow(
            "SELECT key_id, org_id, event_type FROM events WHERE position = $1", position
        )
        return UnreadableEvent(position, row["key_id"], row["org_id"], row["event_type"], error)

    async def head(self, conn: asyncpg.Connection) -> int:
        """The position of the last committed event (0 for an empty log)."""
        head: int = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
        return head
