"""Applying a batch of events to a projection so that one event at fault cannot stop it.

An event a projection cannot apply (it does not decode, the database refuses
its row, ``apply`` raises for it) is not retried forever: its key is
quarantined (``service.store.quarantine``), the key's later events are
skipped, and every other key goes on. An error that says nothing about the
event (``is_transient``: the connection, a timeout) is raised, never
quarantined.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import asyncpg

from service.store.event_store import LoggedEvent, UnreadableEvent
from service.store.quarantine import QuarantinedKey, is_transient
from service.store.quarantine import set_aside as set_aside_key

if TYPE_CHECKING:
    from projections.runner import Projection, Refusal


class BatchRefused(Exception):
    """A batch applied without savepoints failed: its transaction is lost, so the step
    is run again with each event isolated (``apply_isolated``)."""


def _quarantine(
    name: str,
    set_aside: dict[str, QuarantinedKey],
    key_id: str,
    org_id: str,
    position: int,
    event_type: str,
    exc: Exception,
) -> QuarantinedKey:
    entry = set_aside_key(
        name, key_id=key_id, org_id=org_id, position=position, event_type=event_type, failure=exc
    )
    set_aside[key_id] = entry
    return entry


def _sorted_out(
    name: str, rows: Sequence[LoggedEvent | UnreadableEvent], set_aside: dict[str, QuarantinedKey]
) -> tuple[list[LoggedEvent], list[QuarantinedKey]]:
    """The events to apply (their keys not set aside), and the keys of unreadable rows,
    quarantined now (added to ``set_aside``)."""
    events: list[LoggedEvent] = []
    newly: list[QuarantinedKey] = []
    for row in rows:
        if isinstance(row, UnreadableEvent):
            if row.key_id not in set_aside:
                newly.append(
                    _quarantine(
                        name,
                        set_aside,
                        row.key_id,
                        row.org_id,
                        row.position,
                        row.event_type,
                        row.error,
                    )
                )
        elif row.event.key_id not in set_aside:
            events.append(row)
    return events, newly


async def apply_or_refuse(
    conn: asyncpg.Connection,
    projection: Projection,
    rows: Sequence[LoggedEvent | UnreadableEvent],
    set_aside: dict[str, QuarantinedKey],
) -> list[QuarantinedKey]:
    """Apply ``rows`` at once, without a savepoint: the usual case, where nothing fails.

    Unreadable rows quarantine their key as in ``apply_isolated``; should
    ``apply`` fail for any other reason than a transient one, ``BatchRefused``
    is raised, and the caller's transaction must be given up.
    """
    events, newly = _sorted_out(projection.name, rows, set_aside)
    if events:
        try:
            await projection.apply(conn, events)
        except Exception as exc:
            if is_transient(exc):
                raise
            raise BatchRefused from exc
    return newly


async def apply_isolated(
    conn: asyncpg.Connection,
    projection: Projection,
    rows: Sequence[LoggedEvent | UnreadableEvent],
    set_aside: dict[str, QuarantinedKey],
) -> list[QuarantinedKey]:
    """Apply ``rows`` to ``projection``; quarantine, rather than fail on, an event at fault.

    Events of keys in ``set_aside`` are skipped; keys quarantined here are
    added to it and returned. The batch is applied at once in a savepoint;
    only if that fails is it applied again event by event, each in its own
    savepoint, so every good event of the batch still applies. An error that
    says nothing about the event (``is_transient``) is raised, never
    quarantined. Call inside a transaction.
    """
    name = projection.name
    events, newly = _sorted_out(name, rows, set_aside)
    if not events:
        return newly
    try:
        async with conn.transaction():
            await projection.apply(conn, events)
        return newly
    except Exception as exc:
        if is_transient(exc):
            raise
    for logged in events:
        event = logged.event
        if event.key_id in set_aside:
            continue
        try:
            async with conn.transaction():
                await projection.apply(conn, [logged])
        except Exception as exc:
            if is_transient(exc):
                raise
            newly.append(
                _quarantine(
                    name,
                    set_aside,
                    event.key_id,
                    event.org_id,
                    logged.position,
                    event.event_type,
                    exc,
                )
            )
    return newly


def refusals_set_aside(
    name: str, refused: Mapping[str, Refusal] | None, set_aside: dict[str, QuarantinedKey]
) -> list[QuarantinedKey]:
    """Quarantine the keys whose rows a ``flush`` could not write (not already set aside)."""
    newly = []
    for key_id, refusal in (refused or {}).items():
        if key_id not in set_aside:
            entry = set_aside_key(
                name,
                key_id=key_id,
                org_id=refusal.org_id,
                position=refusal.position,
                event_type="(row)",
                failure=refusal.error,
            )
            set_aside[key_id] = entry
            newly.append(entry)
    return newly
