"""The ``key_views`` projection: every key as callers see it (SPEC §3, §6).

A row holds a key's folded state, made by the write side's own ``evolve``, so
the view never disagrees with the decider. ``service.key_view.render_key``
turns a row back into the public JSON, and computes ``expired`` at read time.
``last_used_at`` does not come from events: verification records it in
batches with ``record_last_used``, and a rebuild carries it over.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from events.codec import to_domain_event
from events.models import Envelope, KeyGenerated, RateLimit
from service.domain.decider import evolve
from service.domain.state import KeyState
from service.key_view import render_key

NAME = "key_views"
STATUSES = ("active", "disabled", "revoked", "expired")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

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
)
_SELECT = ", ".join((*_STATE_COLUMNS, "last_used_at"))


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

    status: str | None = None
    type: str | None = None
    environment: str | None = None


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
        json.dumps(state.metadata, separators=(",", ":"), ensure_ascii=False),
        state.rate_limit.model_dump_json() if state.rate_limit else None,
        state.created_at,
        state.updated_at,
        state.expires_at,
        state.disabled_at,
        state.revoked_at,
        state.previous_valid_until,
        state.version,
        position,
    )


def view_from_record(record: asyncpg.Record) -> KeyView:
    """A ``key_views`` row as a key view (secret hashes are not kept: None)."""
    rate_limit = record["rate_limit"]
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
        rate_limit=RateLimit.model_validate_json(rate_limit) if rate_limit else None,
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
    envelopes: Sequence[Envelope], known: dict[str, KeyState]
) -> dict[str, tuple[KeyState, int]]:
    """(new state, position of its last event) of every key ``envelopes`` touch.

    The position is kept beside the state rather than copied into it: one
    ``dataclasses.replace`` per key is a measurable share of a rebuild.
    """
    changed: dict[str, tuple[KeyState, int]] = {}
    for envelope in envelopes:
        key_id = envelope.key_id
        previous = changed[key_id][0] if key_id in changed else known.get(key_id)
        changed[key_id] = (evolve(previous, to_domain_event(envelope)), envelope.position)
    return changed


class KeyViews:
    """The projection (``apply``) and the queries on its table."""

    name = NAME

    def __init__(self, table: str = NAME) -> None:
        if not _IDENTIFIER.match(table):
            raise ValueError(f"not a table name: {table!r}")
        self.table = table
        columns = ", ".join(_STATE_COLUMNS)
        placeholders = ", ".join(f"${i}" for i in range(1, len(_STATE_COLUMNS) + 1))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in _STATE_COLUMNS[1:])
        self._upsert = (
            f"INSERT INTO {table} ({columns}) VALUES ({placeholders})"
            f" ON CONFLICT (key_id) DO UPDATE SET {updates}"
        )

    # -- the projection ------------------------------------------------------

    def on_table(self, table: str) -> KeyViews:
        """This projection writing to ``table`` instead."""
        return KeyViews(table)

    async def apply(self, conn: asyncpg.Connection, envelopes: Sequence[Envelope]) -> None:
        """Fold ``envelopes`` into the rows of the keys they touch."""
        born_here = {e.key_id for e in envelopes if e.event_type == KeyGenerated.event_type}
        needed = list({e.key_id for e in envelopes} - born_here)
        known = await self._states(conn, needed) if needed else {}
        changed = fold_batch(envelopes, known)
        new = [_row(*changed[key_id]) for key_id in born_here]
        if new:
            # Keys born in this batch have no row yet: COPY is several times faster.
            await conn.copy_records_to_table(self.table, records=new, columns=_STATE_COLUMNS)
        await self.save(conn, (v for k, v in changed.items() if k not in born_here))

    async def save(self, conn: asyncpg.Connection, states: Iterable[tuple[KeyState, int]]) -> None:
        """Insert or replace the rows of (state, position) (``last_used_at`` is left alone)."""
        rows = [_row(s, p) for s, p in states]
        if rows:
            await conn.executemany(self._upsert, rows)

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

    # -- written by verification ---------------------------------------------

    async def record_last_used(
        self, conn: asyncpg.Connection, used: Iterable[tuple[str, datetime]]
    ) -> None:
        """Set ``last_used_at`` for many keys at once; it never moves backwards."""
        pairs = list(used)
        if not pairs:
            return
        await conn.execute(
            f"""UPDATE {self.table} AS v SET last_used_at = u.at
                FROM unnest($1::text[], $2::timestamptz[]) AS u(key_id, at)
                WHERE v.key_id = u.key_id
                  AND (v.last_used_at IS NULL OR v.last_used_at < u.at)""",
            [key_id for key_id, _ in pairs],
            [at for _, at in pairs],
        )

    # -- queries -------------------------------------------------------------

    async def get(self, conn: asyncpg.Connection, org_id: str, key_id: str) -> KeyView | None:
        """One key of ``org_id``, or None (absent, or in another org)."""
        row = await conn.fetchrow(
            f"SELECT {_SELECT} FROM {self.table} WHERE key_id = $1 AND org_id = $2",
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
        if where.status is not None:
            clauses.append(_status_clause(where.status, lambda: arg(now)))
        rows = await conn.fetch(
            f"SELECT {_SELECT} FROM {self.table} WHERE {' AND '.join(clauses)}"
            f" ORDER BY key_id DESC LIMIT {arg(limit)}",
            *args,
        )
        return [view_from_record(r) for r in rows]

    async def all_rows(self, conn: asyncpg.Connection) -> list[dict[str, Any]]:
        """Every row as a dict, by key id (for comparing a rebuild with the live table)."""
        rows = await conn.fetch(f"SELECT {_SELECT} FROM {self.table} ORDER BY key_id")
        return [dict(r) for r in rows]


def _status_clause(status: str, now: Callable[[], str]) -> str:
    """SQL for the status a caller sees: past ``expires_at`` reads ``expired``.

    ``now()`` binds the current instant as a parameter and returns its placeholder.
    """
    if status == "revoked":
        return "status = 'revoked'"
    not_past = f"(expires_at IS NULL OR expires_at > {now()})"
    if status in ("active", "disabled"):
        return f"(status = '{status}' AND {not_past})"
    if status == "expired":
        return f"(status = 'expired' OR (status IN ('active', 'disabled') AND NOT {not_past}))"
    raise ValueError(f"unknown status {status!r}")
