"""The read use cases: keys from ``key_views``, history and audit from the log.

Entrypoints (HTTP, CLI, tests) ask these; they never reach the store
themselves. Consistency: ``reach`` waits until ``key_views`` has applied a
position, so a caller reads its own writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from events.models import Envelope
from projections.key_views import NAME as KEY_VIEWS
from projections.key_views import KeyFilter, KeyView, KeyViews
from projections.runner import ProjectionRunner
from service.domain.orgs import SYSTEM_ORG
from service.domain.state import KeyState
from service.errors import KeyledgerError
from service.store.audit_chain import verify_chain
from service.store.audit_log import AuditFilter, find_events
from service.store.event_rows import storable_name
from service.store.event_store import EventStore, UnreadableEvent
from service.store.log_witnesses import audit_json
from service.store.quarantine import QuarantinedKey, QuarantineLog, is_transient
from service.truncation_guard import TruncationGuard
from service.verification.callers import Caller

CONSISTENCY_WAIT_SECONDS = 1.0

__all__ = [
    "AuditFilter",
    "KeyQueries",
    "KeyReading",
    "QuarantinedKey",
    "UnreadableEvent",
    "audit_filter",
    "storable_name",
]


@dataclass(frozen=True, slots=True)
class KeyReading:
    """One key as the read side has it: its view row, its state, its quarantines.

    ``state`` is folded from the log when ``key_views`` has no row for a key
    a consumer quarantined; None when the key does not exist for this org
    (or cannot be folded).
    """

    view: KeyView | None
    state: KeyState | None
    # Only this org's quarantines: another org's key stays invisible.
    quarantines: list[QuarantinedKey]


def audit_filter(
    caller: Caller,
    *,
    org_id: str | None,
    key_id: str | None,
    event_type: str | None,
    actor: str | None,
    since: datetime | None,
    until: datetime | None,
) -> AuditFilter:
    """What ``caller`` may read of the audit log, narrowed by what it asks for."""
    if org_id is not None and not caller.can_see_org(org_id):
        raise KeyledgerError("org_not_found", "no such org")
    if since is not None and until is not None and since > until:
        raise KeyledgerError(
            "invalid_time_range",
            "since must not be after until",
            [{"loc": ["query", "since"], "msg": "since is after until"}],
        )
    return AuditFilter(
        org_id=org_id,
        key_id=key_id,
        event_type=event_type,
        actor=actor,
        since=since,
        until=until,
        visible_orgs=caller.orgs,
        hidden_orgs=frozenset() if caller.can_see_org(SYSTEM_ORG) else frozenset({SYSTEM_ORG}),
    )


class KeyQueries:
    """Reads of keys, their history and the audit log, on this replica's pool."""

    def __init__(
        self, pool: asyncpg.Pool, projections: ProjectionRunner, guard: TruncationGuard
    ) -> None:
        self.pool = pool
        self.projections = projections
        self.guard = guard
        self.views = KeyViews()
        self.store = EventStore()
        self.quarantine = QuarantineLog()

    async def reach(self, min_position: int | None) -> None:
        """Wait until ``key_views`` has applied ``min_position`` (else ``not_caught_up``).

        Without a position, wait briefly for the log head as it is now, and
        answer from what the projection has if it is slow rather than fail.
        """
        runner = self.projections
        if min_position is not None:
            if not await runner.wait_for(KEY_VIEWS, min_position, CONSISTENCY_WAIT_SECONDS):
                raise KeyledgerError(
                    "not_caught_up",
                    f"position {min_position} is not readable yet; retry shortly",
                    {"min_position": min_position, "position": runner.position(KEY_VIEWS)},
                )
            return
        async with self.pool.acquire() as conn:
            head = await self.store.head(conn)
        await runner.wait_for(KEY_VIEWS, head, CONSISTENCY_WAIT_SECONDS)

    async def key_page(
        self, org_id: str, where: KeyFilter, *, before: str | None, limit: int, now: datetime
    ) -> list[KeyView]:
        """Up to ``limit`` of the org's keys matching ``where``, newest first, before a key id."""
        async with self.pool.acquire() as conn:
            return await self.views.page(conn, org_id, where, before=before, limit=limit, now=now)

    async def key(self, org_id: str, key_id: str) -> KeyReading:
        """One key of ``org_id``, with what consumers have set aside of it."""
        async with self.pool.acquire() as conn:
            view = await self.views.get(conn, org_id, key_id)
            quarantines = [
                e for e in await self.quarantine.of_key(conn, key_id) if e.org_id == org_id
            ]
            state = view.state if view is not None else None
            if state is None and quarantines:
                state = await self._state_from_log(conn, org_id, key_id)
        return KeyReading(view, state, quarantines)

    async def _state_from_log(
        self, conn: asyncpg.Connection, org_id: str, key_id: str
    ) -> KeyState | None:
        """The key folded from the log, when ``key_views`` has no row for it; None if it cannot."""
        try:
            state = await self.store.load_state(conn, key_id)
        except Exception as exc:
            if is_transient(exc):
                raise
            return None
        return state if state is not None and state.org_id == org_id else None

    async def key_events(self, org_id: str, key_id: str) -> list[Envelope | UnreadableEvent]:
        """Every event of a key of ``org_id``, oldest first (``key_not_found`` otherwise).

        A row that cannot be read comes back as an ``UnreadableEvent`` in its place.
        """
        async with self.pool.acquire() as conn:
            stream = await self.store.read_stream(conn, key_id)
        if not stream or stream[0].org_id != org_id:
            raise KeyledgerError("key_not_found", "no such key")
        return stream

    async def audit_events(
        self, where: AuditFilter, *, after: int, limit: int
    ) -> list[Envelope | UnreadableEvent]:
        """Up to ``limit`` events after position ``after`` that match ``where``."""
        async with self.pool.acquire() as conn:
            return await find_events(conn, where, after=after, limit=limit)

    async def verify_log(self) -> dict[str, Any]:
        """The audit report (as JSON): the hash chain walked, the head against its witnesses."""
        async with self.pool.acquire() as conn:
            report = await verify_chain(conn)
        # After the walk: a witness read later can only be further along, never a false alarm.
        witnesses = await self.guard.check()
        return audit_json(report, witnesses)
