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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import asyncpg

from events.codec import GENESIS_HASH, to_domain_event
from events.models import Actor, DomainEvent, Envelope
from service.domain.decider import evolve
from service.domain.state import KeyState
from service.errors import KeyledgerError
from service.store.event_rows import (
    EVENT_COLUMNS,
    EVENT_ONLY_COLUMNS,
    Committed,
    LoggedEvent,
    UnfoldableStream,
    UnreadableEvent,
    envelope_from_row,
    logged_event,
    readable_envelope,
    row_of,
    seal_after,
)
from service.store.quarantine import is_transient

LOG_LOCK = 0x6B65796C_0002
NOTIFY_CHANNEL = "keyledger_events"

_Decoded = TypeVar("_Decoded")


def fold_envelopes(envelopes: Sequence[Envelope], state: KeyState | None = None) -> KeyState | None:
    """A key's state from its envelopes, remembering the last global position."""
    for envelope in envelopes:
        state = evolve(state, to_domain_event(envelope))
    if state is not None and envelopes:
        state = state.with_changes(position=envelopes[-1].position)
    return state


def fold_committed(committed: Sequence[Committed], state: KeyState | None) -> KeyState | None:
    """``fold_envelopes`` of events just appended, from the events their writer decoded."""
    for item in committed:
        state = evolve(state, item.decoded())
    if state is not None and committed:
        state = state.with_changes(position=committed[-1].position)
    return state


def fold_stream(envelopes: Sequence[Envelope]) -> KeyState | None:
    """``fold_envelopes`` of one key's stream; ``UnfoldableStream`` if it does not apply."""
    try:
        return fold_envelopes(envelopes)
    except Exception as exc:
        if is_transient(exc):
            raise
        first = envelopes[0]
        raise UnfoldableStream(
            first.key_id, first.org_id, first.position, first.event_type
        ) from exc


def insert_sql(first: int = 1) -> str:
    """Insert events from eleven arrays, ``$first``… (see ``event_columns``)."""
    p = [f"${n}" for n in range(first, first + 11)]
    return (
        f"INSERT INTO events ({EVENT_COLUMNS})"
        " SELECT p, e, t, s, o, k, v, a, c::json, d::json, h FROM unnest("
        f"{p[0]}::bigint[], {p[1]}::uuid[], {p[2]}::text[], {p[3]}::int[], {p[4]}::text[],"
        f" {p[5]}::text[], {p[6]}::int[], {p[7]}::timestamptz[], {p[8]}::text[],"
        f" {p[9]}::text[], {p[10]}::text[]) AS r(p, e, t, s, o, k, v, a, c, d, h)"
    )


def event_columns(envelopes: Sequence[Envelope]) -> list[list[Any]]:
    """The arrays ``insert_sql`` takes: ``row_of`` each envelope, column by column."""
    rows = [row_of(envelope) for envelope in envelopes]
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 11


def committed_columns(committed: Sequence[Committed]) -> list[list[Any]]:
    """``event_columns`` of events just appended, with the texts sealing encoded."""
    rows = [row_of(item.envelope, item.encoded) for item in committed]
    return [list(column) for column in zip(*rows, strict=True)] if rows else [[]] * 11


def version_taken(exc: asyncpg.UniqueViolationError) -> bool:
    """Whether a duplicate is in the ``events`` table (a stream version or position already
    taken: the log moved under the command), not elsewhere (a registered secret hash)."""
    table: str | None = exc.table_name
    return table == "events"


VERSION_MISMATCH = "the key changed concurrently; retry"


@dataclass(slots=True)
class LogHead:
    """The last position and hash of the log, carried through a batch of appends."""

    position: int
    hash: str


class EventStore:
    """Appends to and reads from the ``events`` table."""

    async def lock(self, conn: asyncpg.Connection, wait_seconds: float | None = None) -> None:
        """Take the append lock for the rest of ``conn``'s transaction.

        With ``wait_seconds``, waiting longer than that raises
        ``asyncpg.LockNotAvailableError`` (advisory locks honour ``lock_timeout``),
        so one stuck transaction cannot stall every writer. The setting stays
        for the rest of the transaction (one round trip for both statements).
        """
        await conn.execute(self.lock_sql(wait_seconds))

    @staticmethod
    def lock_sql(wait_seconds: float | None = None) -> str:
        """The statements of ``lock``, to send after ``BEGIN`` in the same round trip."""
        lock = f"SELECT pg_advisory_xact_lock({LOG_LOCK:d})"
        if wait_seconds is None:
            return lock
        milliseconds = max(1, round(wait_seconds * 1000))  # 0 would mean "wait forever"
        return f"SET LOCAL lock_timeout = {milliseconds:d}; {lock}"

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
        sealed = seal_after(
            events,
            actor=actor,
            expected_version=expected_version,
            position=head.position,
            previous_hash=head.hash,
        )
        if not sealed:
            return sealed
        await self.insert_sealed(conn, sealed)
        head.position, head.hash = sealed[-1].position, sealed[-1].hash
        if standalone:
            await self.notify(conn, head.position)
        return sealed

    async def insert_sealed(self, conn: asyncpg.Connection, envelopes: Sequence[Envelope]) -> None:
        """Insert envelopes already sealed after the head, in one statement.

        Call inside a transaction after ``lock``. A stream version already
        taken refuses the whole statement with ``version_mismatch``.
        """
        try:
            await conn.execute(insert_sql(), *event_columns(envelopes))
        except asyncpg.UniqueViolationError as exc:
            raise KeyledgerError("version_mismatch", VERSION_MISMATCH) from exc

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
        """Every event of one key, in stream order; ``UnfoldableStream`` if one is unreadable."""
        envelopes: list[Envelope] = []
        for item in await self.read_stream(conn, key_id):
            if isinstance(item, UnreadableEvent):
                raise UnfoldableStream(key_id, item.org_id, item.position, item.event_type)
            envelopes.append(item)
        return envelopes

    async def load_streams(
        self, conn: asyncpg.Connection, key_ids: Sequence[str]
    ) -> dict[str, list[Envelope] | UnfoldableStream]:
        """The streams of ``key_ids`` in one query; a key with an unreadable event maps to
        its ``UnfoldableStream``, a key without events to an empty list."""
        streams: dict[str, list[Envelope] | UnfoldableStream] = {key: [] for key in key_ids}
        read = await self.read_tolerantly(
            conn,
            EVENT_COLUMNS,
            readable_envelope,
            "key_id = ANY($1::text[])",
            [list(key_ids)],
            order="key_id, stream_version",
        )
        for item in read:
            stream = streams[item.key_id]
            if isinstance(stream, UnfoldableStream):
                continue
            if isinstance(item, UnreadableEvent):
                streams[item.key_id] = UnfoldableStream(
                    item.key_id, item.org_id, item.position, item.event_type
                )
            else:
                stream.append(item)
        return streams

    async def read_stream(
        self, conn: asyncpg.Connection, key_id: str
    ) -> list[Envelope | UnreadableEvent]:
        """Every event of one key, in stream order, each unreadable one in its place.

        "Readable" is ``readable_envelope``: what the API could have written.
        """
        return await self.read_tolerantly(
            conn, EVENT_COLUMNS, readable_envelope, "key_id = $1", [key_id], order="stream_version"
        )

    async def load_state(self, conn: asyncpg.Connection, key_id: str) -> KeyState | None:
        """The current state of one key, or None when it does not exist.

        Raises ``UnfoldableStream`` when an event of the key cannot be read or
        applied (an event before ``KeyGenerated``, say).
        """
        return self.fold(await self.load_stream(conn, key_id))

    def fold(self, envelopes: Sequence[Envelope]) -> KeyState | None:
        """``fold_stream``: one key's state, or ``UnfoldableStream``."""
        return fold_stream(envelopes)

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
        return await self._read_tolerantly(conn, EVENT_ONLY_COLUMNS, logged_event, position, limit)

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
        return await self.read_tolerantly(
            conn, columns, decode, "position > $1", [position], limit=limit
        )

    async def read_tolerantly(
        self,
        conn: asyncpg.Connection,
        columns: str,
        decode: Callable[[asyncpg.Record], _Decoded],
        where: str,
        args: Sequence[Any],
        *,
        order: str = "position",
        limit: int | None = None,
    ) -> list[_Decoded | UnreadableEvent]:
        """The rows ``where`` selects (``$1``… are ``args``), each decoded or unreadable.

        A row that ``decode`` refuses becomes an ``UnreadableEvent`` in its
        place; so does one the driver itself cannot decode (a timestamp past
        year 9999), found by reading the rows again one by one.
        """
        tail = f" ORDER BY {order}"
        if limit is not None:
            tail += f" LIMIT {int(limit):d}"
        try:
            rows = await conn.fetch(f"SELECT {columns} FROM events WHERE {where}{tail}", *args)
        except Exception as exc:
            if is_transient(exc):
                raise
            positions = await conn.fetch(f"SELECT position FROM events WHERE {where}{tail}", *args)
            return await self._read_row_by_row(conn, columns, decode, [p for (p,) in positions])
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
        positions: Sequence[int],
    ) -> list[_Decoded | UnreadableEvent]:
        decoded: list[_Decoded | UnreadableEvent] = []
        for at in positions:
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
            "SELECT key_id, org_id, event_type, stream_version FROM events WHERE position = $1",
            position,
        )
        return UnreadableEvent(
            position, row["key_id"], row["org_id"], row["event_type"], error, row["stream_version"]
        )

    async def head(self, conn: asyncpg.Connection) -> int:
        """The position of the last committed event (0 for an empty log)."""
        head: int = await conn.fetchval("SELECT coalesce(max(position), 0) FROM events")
        return head


__all__ = [
    "EVENT_COLUMNS",
    "LOG_LOCK",
    "NOTIFY_CHANNEL",
    "EventStore",
    "LogHead",
    "LoggedEvent",
    "UnfoldableStream",
    "UnreadableEvent",
    "envelope_from_row",
    "fold_envelopes",
    "fold_stream",
    "readable_envelope",
    "row_of",
]
