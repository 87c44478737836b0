"""The audit trail: filtered reads of the event log in position order (docs/api.md#audit)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from events.models import Envelope
from service.store.event_store import EVENT_COLUMNS, EventStore, UnreadableEvent, readable_envelope

_store = EventStore()


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """What ``GET /v1/audit`` asks for. ``since`` is inclusive, ``until`` exclusive."""

    org_id: str | None = None
    key_id: str | None = None
    event_type: str | None = None
    actor: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    # The caller's org restriction: None sees every org; otherwise only these.
    visible_orgs: frozenset[str] | None = None
    # Orgs never shown to this caller (the reserved ``_system`` org, unless admin).
    hidden_orgs: frozenset[str] = frozenset()


async def find_events(
    conn: asyncpg.Connection, where: AuditFilter, *, after: int, limit: int
) -> list[Envelope | UnreadableEvent]:
    """Up to ``limit`` events after position ``after`` that match ``where``.

    A row the API could not have written (``readable_envelope``) comes back as
    an ``UnreadableEvent`` in its place: the trail stays readable around it.
    """
    args: list[Any] = [after]
    clauses = ["position > $1"]

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    if where.org_id is not None:
        clauses.append(f"org_id = {arg(where.org_id)}")
    if where.visible_orgs is not None:
        clauses.append(f"org_id = ANY({arg(list(where.visible_orgs))}::text[])")
    if where.hidden_orgs:
        clauses.append(f"org_id <> ALL({arg(list(where.hidden_orgs))}::text[])")
    if where.key_id is not None:
        clauses.append(f"key_id = {arg(where.key_id)}")
    if where.event_type is not None:
        clauses.append(f"event_type = {arg(where.event_type)}")
    if where.actor is not None:
        # Written exactly as in the events_actor_position index, so it is used.
        clauses.append(f"(actor ->> 'id') = {arg(where.actor)}")
    if where.since is not None:
        clauses.append(f"occurred_at >= {arg(where.since)}")
    if where.until is not None:
        clauses.append(f"occurred_at < {arg(where.until)}")
    return await _store.read_tolerantly(
        conn, EVENT_COLUMNS, readable_envelope, " AND ".join(clauses), args, limit=limit
    )
