"""The ``key_views`` projection: every key as callers see it (docs/api.md#keys).

A row holds a key's folded state, made by the write side's own ``evolve``, so
the view never disagrees with the decider. ``service.key_view.render_key``
turns a row back into the public JSON, and computes ``expired`` at read time.
``last_used_at`` does not come from events: verification records it in
batches (``service.key_usage.UsageRecorder``), and a rebuild carries it over.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import asyncpg

from events.models import (
    Credits,
    IdentityConfigured,
    KeyGenerated,
    NamedRateLimit,
    RateLimit,
    WebhookRegistered,
    WebhookRemoved,
)
from events.vocabulary import LIVE_STATUSES, Environment, KeyType, Status
from projections.runner import Refusal
from service.domain.decider import evolve
from service.domain.state import KeyState, named_limits
from service.key_view import render_key
from service.store.event_store import LoggedEvent
from service.store.quarantine import is_transient

NAME = "key_views"
_IDENTIFIER = re.compile(r"\A[a-z_][a-z0-9_]{0,62}\Z")

# Columns written from the folded state, in the order of ``_row``.
_STATE_COLUMNS = (
    "key_id",
    "org_id",
    "name",
    "type",
    "environment",
    "status",
    "scopes",
    "allowed_origins",
    "resource",
    "algorithm",
    "public_key",
    "hint",
    "metadata",
    "rate_limit",
    "created_at",
    "updated_at",
    "expires_at",
    "disabled_at",
    "revoked_at",
    "previous_valid_until",
    "version",
    "position",
    "rate_limits",
    "credits",
    "allowed_cidrs",
    "identity_id",
)
_SELECT = ", ".join((*_STATE_COLUMNS, "last_used_at"))
# How many keys a rebuild folds in memory before it writes them out (about a
# kilobyte each); a log with fewer keys is written by one COPY at the end.
HOLD_LIMIT = 100_000


@dataclass(frozen=True, slots=True)
class KeyView:
    """One row of ``key_views``."""

    state: KeyState
    last_used_at: datetime | None

    def render(self, now: datetime) -> dict[str, Any]:
        """The key's public JSON at ``now``."""
        return render_key(self.state, now, self.last_used_at)


@dataclass(frozen=True, slots=True)
class KeyFilter:
    """The filters of ``GET /v1/orgs/{org}/keys``; None means any."""

    status: Status | None = None
    type: KeyType | None = None
    environment: Environment | None = None
    identity_id: str | None = None


def _row(state: KeyState, position: int) -> tuple[Any, ...]:
    return (
        state.key_id,
        state.org_id,
        state.name,
        state.type,
        state.environment,
        state.status,
        list(state.scopes),
        list(state.allowed_origins),
        state.resource,
        state.algorithm,
        state.public_key,
        state.hint,
        _json(state.metadata),
        state.rate_limit.model_dump_json() if state.rate_limit else None,
        state.created_at,
        state.updated_at,
        state.expires_at,
        state.disabled_at,
        state.revoked_at,
        state.previous_valid_until,
        state.version,
        position,
        _json([limit.model_dump() for limit in state.rate_limits]),
        state.credits.model_dump_json() if state.credits else None,
        list(state.allowed_cidrs),
        state.identity_id,
    )


# ``json.dumps(value, separators=(",", ":"), ensure_ascii=False)``: with arguments,
# ``json.dumps`` builds a new encoder on every call, which cost as much as encoding a
# key's (mostly empty) metadata and limits; one encoder, made once, writes the same text.
_json: Callable[[Any], str] = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def view_from_record(record: asyncpg.Record) -> KeyView:
    """A ``key_views`` row as a key view (secret hashes are not kept: None)."""
    rate_limit = (
        RateLimit.model_validate_json(record["rate_limit"]) if record["rate_limit"] else None
    )
    credits = record["credits"]
    rate_limits = tuple(NamedRateLimit.model_validate(r) for r in json.loads(record["rate_limits"]))
    state = KeyState(
        key_id=record["key_id"],
        org_id=record["org_id"],
        name=record["name"],
        type=record["type"],
        environment=record["environment"],
        status=record["status"],
        scopes=tuple(record["scopes"]),
        allowed_origins=tuple(record["allowed_origins"]),
        resource=record["resource"],
        algorithm=record["algorithm"],
        public_key=record["public_key"],
        secret_hash=None,
        hint=record["hint"],
        metadata=json.loads(record["metadata"]),
        rate_limit=rate_limit,
        # Rows from before named limits hold only the single one.
        rate_limits=rate_limits or named_limits(rate_limit),
        credits=Credits.model_validate_json(credits) if credits else None,
        allowed_cidrs=tuple(record["allowed_cidrs"]),
        identity_id=record["identity_id"],
        created_at=record["created_at"],
        updated_at=record["updated_at"],
        expires_at=record["expires_at"],
        version=record["version"],
        disabled_at=record["disabled_at"],
        revoked_at=record["revoked_at"],
        previous_valid_until=record["previous_valid_until"],
        position=record["position"],
    )
    return KeyView(state, record["last_used_at"])


def fold_batch(
    events: Sequence[LoggedEvent], known: dict[str, KeyState]
) -> dict[str, tuple[KeyState, int]]:
    """(new state, position of its last event) of every key ``events`` touch.

    The position is kept beside the state rather than copied into it: one
    more state copy per key is a measurable share of a rebuild.
    """
    changed: dict[str, tuple[KeyState, int]] = {}
    for position, event in events:
        key_id = event.key_id
        previous = changed[key_id][0] if key_id in changed else known.get(key_id)
        changed[key_id] = (evolve(previous, event), position)
    return changed


@dataclass
class _Held:
    """What a rebuild has folded but not yet written."""

    states: dict[str, KeyState] = field(default_factory=dict)
    positions: dict[str, int] = field(default_factory=dict)
    # Keys whose row the table already has (written by an earlier flush).
    with_row: set[str] = field(default_factory=set)


class KeyViews:
    """The projection (``apply``) and the queries on its table."""

    name = NAME

    def __init__(
        self, table: str = NAME, *, hold_limit: int = HOLD_LIMIT, holding: bool = False
    ) -> None:
        """``holding`` (a rebuild's fresh table, see ``on_table``): fold up to
        ``hold_limit`` keys in memory and write each one's row once, at ``flush``."""
        if not _IDENTIFIER.fullmatch(table):
            raise ValueError(f"not a table name: {table!r}")
        if hold_limit < 1:
            raise ValueError("hold_limit must be at least 1")
        self.table = table
        self.hold_limit = hold_limit
        self._held = _Held() if holding else None
        # Keys whose rows a flush could not write (holding only): their later events are skipped.
        self._refused: dict[str, Refusal] = {}
        columns = ", ".join(_STATE_COLUMNS)
        placeholders = ", ".join(f"${i}" for i in range(1, len(_STATE_COLUMNS) + 1))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _STATE_COLUMNS[1:])
        # What callers read: ``last_used_at`` also from ``key_usage``, since a use flushed
        # while the key's row was being projected reaches only that table.
        self._read = (
            f"SELECT {', '.join(_STATE_COLUMNS)}, GREATEST({table}.last_used_at, (SELECT"
            f" u.last_used_at FROM key_usage AS u WHERE u.key_id = {table}.key_id))"
            f" AS last_used_at FROM {table}"
        )
        self._upsert = (
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"
            f" ON CONFLICT (key_id) DO UPDATE SET {updates}"
        )

    # -- the projection ------------------------------------------------------

    def on_table(self, table: str) -> KeyViews:
        """This projection filling ``table``, a rebuild's fresh copy.

        A rebuild needs only each key's final row, and a key's events are
        spread over the whole log: rather than read back and rewrite rows
        batch after batch, it folds in memory (up to ``hold_limit`` keys, then
        writes them out) and COPYs the rows at ``flush``.
        """
        return KeyViews(table, hold_limit=self.hold_limit, holding=True)

    async def apply(self, conn: asyncpg.Connection, events: Sequence[LoggedEvent]) -> None:
        """Fold ``events`` into the rows of the keys they touch (held back when filling).

        An identity's or a webhook endpoint's events are no key's: this view has no row
        for them."""
        events = [
            e
            for e in events
            if not isinstance(e.event, IdentityConfigured | WebhookRegistered | WebhookRemoved)
        ]
        if self._refused:
            events = [e for e in events if e.event.key_id not in self._refused]
        born_here = {e.key_id for _, e in events if isinstance(e, KeyGenerated)}
        held = self._held
        needed = [
            key_id
            for key_id in {e.key_id for _, e in events} - born_here
            if held is None or key_id not in held.states
        ]
        known = await self._states(conn, needed) if needed else {}
        if held is None:
            await self._write(conn, fold_batch(events, known), with_row=known.keys())
            return
        held.states.update(known)
        held.with_row.update(known)
        for key_id, (state, position) in fold_batch(events, held.states).items():
            held.states[key_id] = state
            held.positions[key_id] = position
        if len(held.states) >= self.hold_limit:
            await self._write_held(conn)

    async def flush(self, conn: asyncpg.Connection) -> Mapping[str, Refusal]:
        """Write the rows ``apply`` has held back (nothing when it writes as it goes).

        Returns every key whose row the database refused since this copy was
        made; their later events are skipped (the caller quarantines them)."""
        await self._write_held(conn)
        return dict(self._refused)

    async def _write_held(self, conn: asyncpg.Connection) -> None:
        held = self._held
        if held is None or not held.states:
            return
        folded = {key_id: (state, held.positions[key_id]) for key_id, state in held.states.items()}
        # Held rows are many keys' final states: one refused row must not cost the others.
        try:
            async with conn.transaction():
                await self._write(conn, folded, with_row=held.with_row)
        except Exception as exc:
            if is_transient(exc):
                raise
            for key_id, pair in folded.items():
                try:
                    async with conn.transaction():
                        await self._write(conn, {key_id: pair}, with_row=held.with_row)
                except Exception as row_exc:
                    if is_transient(row_exc):
                        raise
                    self._refused[key_id] = Refusal(pair[0].org_id, pair[1], row_exc)
        self._held = _Held()

    async def _write(
        self,
        conn: asyncpg.Connection,
        folded: dict[str, tuple[KeyState, int]],
        with_row: Collection[str],
    ) -> None:
        new = [_row(*pair) for key_id, pair in folded.items() if key_id not in with_row]
        if new:
            # Keys without a row yet (born since): COPY is several times faster than upserts.
            await conn.copy_records_to_table(self.table, records=new, columns=_STATE_COLUMNS)
        await self.save(conn, (pair for key_id, pair in folded.items() if key_id in with_row))

    async def save(self, conn: asyncpg.Connection, states: Iterable[tuple[KeyState, int]]) -> None:
        """Insert or replace the rows of (state, position) (``last_used_at`` is left alone)."""
        rows = [_row(s, p) for s, p in states]
        if rows:
            await conn.executemany(self._upsert, rows)

    async def seed(self, conn: asyncpg.Connection, states: Sequence[KeyState]) -> None:
        """Rows for states taken from a registry snapshot (a rebuild's start): held and
        written like folded ones, so a row the database refuses costs that key alone."""
        held = self._held
        if held is None:
            raise RuntimeError("only a rebuild's fresh table is seeded")
        for state in states:
            held.states[state.key_id] = state
            held.positions[state.key_id] = state.position
        if len(held.states) >= self.hold_limit:
            await self._write_held(conn)

    async def carry_over(self, conn: asyncpg.Connection, old_table: str, new_table: str) -> None:
        """Keep ``last_used_at``, which no event records, across a rebuild."""
        await conn.execute(
            f"UPDATE {new_table} AS n SET last_used_at = o.last_used_at"
            f" FROM {old_table} AS o WHERE o.key_id = n.key_id AND o.last_used_at IS NOT NULL"
        )

    async def _states(self, conn: asyncpg.Connection, key_ids: list[str]) -> dict[str, KeyState]:
        rows = await conn.fetch(
            f"SELECT {_SELECT} FROM {self.table} WHERE key_id = ANY($1)", key_ids
        )
        return {r["key_id"]: view_from_record(r).state for r in rows}

    # -- queries -------------------------------------------------------------

    async def get(self, conn: asyncpg.Connection, org_id: str, key_id: str) -> KeyView | None:
        """One key of ``org_id``, or None (absent, or in another org)."""
        row = await conn.fetchrow(
            f"{self._read} WHERE key_id = $1 AND org_id = $2",
            key_id,
            org_id,
        )
        return None if row is None else view_from_record(row)

    async def page(
        self,
        conn: asyncpg.Connection,
        org_id: str,
        where: KeyFilter,
        *,
        before: str | None,
        limit: int,
        now: datetime,
    ) -> list[KeyView]:
        """Up to ``limit`` keys of ``org_id``, newest first, with ids below ``before``."""
        clauses = ["org_id = $1"]
        args: list[Any] = [org_id]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if before is not None:
            clauses.append(f"key_id < {arg(before)}")
        if where.type is not None:
            clauses.append(f"type = {arg(where.type)}")
        if where.environment is not None:
            clauses.append(f"environment = {arg(where.environment)}")
        if where.identity_id is not None:
            clauses.append(f"identity_id = {arg(where.identity_id)}")
        if where.status is not None:
            clauses.append(_status_clause(where.status, lambda: arg(now)))
        rows = await conn.fetch(
            f"{self._read} WHERE {' AND '.join(clauses)} ORDER BY key_id DESC LIMIT {arg(limit)}",
            *args,
        )
        return [view_from_record(r) for r in rows]

    async def all_rows(self, conn: asyncpg.Connection) -> list[dict[str, Any]]:
        """Every row as a dict, by key id (for comparing a rebuild with the live table)."""
        rows = await conn.fetch(f"SELECT {_SELECT} FROM {self.table} ORDER BY key_id")
        return [dict(r) for r in rows]


def _status_clause(status: Status, now: Callable[[], str]) -> str:
    """SQL for the status a caller sees: past ``expires_at`` reads ``expired``.

    ``now()`` binds the current instant as a parameter and returns its placeholder.
    """
    if status == "revoked":
        return "status = 'revoked'"
    not_past = f"(expires_at IS NULL OR expires_at > {now()})"
    if status in LIVE_STATUSES:
        return f"(status = '{status}' AND {not_past})"
    if status == "expired":
        return f"(status = 'expired' OR (status IN ('active', 'disabled') AND NOT {not_past}))"
    raise ValueError(f"unknown status {status!r}")
