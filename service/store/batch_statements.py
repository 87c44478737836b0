"""The statements of one group-commit batch: everything it reads in one, everything it writes
in one.

Under the append lock every statement is a round trip that every waiting
command pays for (and, with several replicas, every other replica too), so a
batch of key commands (``service.key_commands``) reads the log head, which
new key ids are taken, the active-key counts, the remembered
``Idempotency-Key`` outcomes and the callers' standing in one query
(``read_batch``; the streams of existing keys, when the batch has any, in a
second: ``EventStore.load_streams``), and writes its events, the key registry
and the remembered outcomes, with the NOTIFY, in one statement
(``write_batch``). Each table's SQL is its own module's; this one puts the
pieces together.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from events.codec import GENESIS_HASH
from events.vocabulary import Environment
from service.domain.state import KeyState
from service.errors import KeyledgerError
from service.store.credit_balances import upsert_columns as credits_upsert_columns
from service.store.credit_balances import upsert_sql as credits_upsert_sql
from service.store.event_rows import Committed
from service.store.event_store import (
    NOTIFY_CHANNEL,
    VERSION_MISMATCH,
    LogHead,
    committed_columns,
    insert_sql,
    version_taken,
)
from service.store.idempotency import (
    StoredOutcome,
    lookup_sql,
    remember_columns,
    remember_sql,
    stored_outcome,
)
from service.store.key_registry import (
    CallerStanding,
    count_active_sql,
    standing_of,
    standings_sql,
    upsert_columns,
    upsert_sql,
)

CountKey = tuple[str, Environment, datetime]
OutcomeKey = tuple[str, str]

_READ = f"""SELECT
    (SELECT ROW(position, hash) FROM events ORDER BY position DESC LIMIT 1),
    ARRAY(SELECT DISTINCT key_id FROM events WHERE key_id = ANY($1::text[])),
    ARRAY({count_active_sql(2)}),
    ARRAY({lookup_sql(5)}),
    ARRAY({standings_sql(8)})"""

_WRITE = f"""WITH new_events AS ({insert_sql(1)}),
    registry AS ({upsert_sql(12)}),
    remembered AS ({remember_sql(22)}),
    balances AS ({credits_upsert_sql(29)})
SELECT pg_notify($27, $28) WHERE $28 <> ''"""


@dataclass(frozen=True, slots=True)
class BatchRead:
    """What ``read_batch`` found."""

    head: LogHead
    # New key ids that already have events.
    taken: frozenset[str]
    counts: dict[CountKey, int]
    outcomes: dict[OutcomeKey, StoredOutcome]
    callers: dict[str, CallerStanding]


async def read_batch(
    conn: asyncpg.Connection,
    *,
    new_key_ids: Sequence[str],
    counts: Sequence[CountKey],
    outcomes: Sequence[OutcomeKey],
    callers: Sequence[str],
    ttl_hours: int,
) -> BatchRead:
    """One query, after the append lock: the head and every lookup the batch names."""
    row = await conn.fetchrow(
        _READ,
        list(new_key_ids),
        [org for org, _, _ in counts],
        [environment for _, environment, _ in counts],
        [at for _, _, at in counts],
        [caller for caller, _ in outcomes],
        [key for _, key in outcomes],
        ttl_hours,
        list(callers),
    )
    head, taken, counted, stored, standings = row
    return BatchRead(
        head=LogHead(*head) if head is not None else LogHead(0, GENESIS_HASH),
        taken=frozenset(taken),
        counts=dict(zip(counts, counted, strict=True)),
        outcomes=dict(stored_outcome(r) for r in stored),
        callers=dict(standing_of(r) for r in standings),
    )


async def write_batch(
    conn: asyncpg.Connection,
    events: Sequence[Committed],
    states: Collection[KeyState],
    remembered: Mapping[OutcomeKey, StoredOutcome],
) -> None:
    """One statement: insert ``events`` (sealed after the head), upsert each key's
    registry row and credit balance, keep the ``remembered`` outcomes, and NOTIFY when
    there are events.

    A stream version already taken refuses the whole statement with
    ``version_mismatch``; nothing of it is written.
    """
    try:
        await conn.execute(
            _WRITE,
            *committed_columns(events),
            *upsert_columns(states),
            *remember_columns(remembered),
            NOTIFY_CHANNEL,
            str(events[-1].position) if events else "",
            *credits_upsert_columns(states),
        )
    except asyncpg.UniqueViolationError as exc:
        if version_taken(exc):
            raise KeyledgerError("version_mismatch", VERSION_MISMATCH) from exc
        raise
