"""The event log's contract: what the write side needs of any store of events.

Every implementation keeps the same promises, checked by one reusable test
suite (``tests/support/store_contract.py``) run against each of them:

- ``append`` seals events onto one key's stream: stream versions continue
  from ``expected_version``, positions are dense across the whole log
  (1, 2, 3…), and each hash links to the previous event's
  (``events.codec.seal``); the chain verifies with ``audit_chain.walk_chain``.
- An append decided against a version the stream has already passed is
  refused with ``version_mismatch`` and writes nothing.
- ``load_stream`` gives one key's events in stream order, never another
  key's; ``read_after`` gives the log after a position, in position order;
  ``head`` is the last position (0 for an empty log).

``EventStore`` (PostgreSQL) works on a connection its caller holds, inside
the caller's transaction and lock, so that the group commit can batch many
appends in one transaction; ``PostgresEventLog`` is the thin wrapper that
gives it this contract's shape, one transaction per append.
``service.store.in_memory.InMemoryEventLog`` is the other implementation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import asyncpg

from events.models import Actor, DomainEvent, Envelope
from service.store.event_store import EventStore


class EventLog(Protocol):
    """An append-only, hash-chained log of every key's events (see module doc)."""

    async def append(
        self, events: Sequence[DomainEvent], *, actor: Actor, expected_version: int
    ) -> list[Envelope]:
        """Seal ``events`` (all of one key) onto its stream; the envelopes as stored.

        ``expected_version`` is the stream version they were decided against.
        """

    async def load_stream(self, key_id: str) -> list[Envelope]:
        """Every event of one key, in stream order (empty for an unknown key)."""

    async def read_after(self, position: int, limit: int = 1000) -> list[Envelope]:
        """Up to ``limit`` events after ``position``, in position order."""

    async def head(self) -> int:
        """The position of the last event (0 for an empty log)."""


class PostgresEventLog:
    """``EventStore`` as an ``EventLog``: each call on a connection of its own from ``pool``."""

    def __init__(self, pool: asyncpg.Pool, store: EventStore | None = None) -> None:
        self.pool = pool
        self.store = store or EventStore()

    async def append(
        self, events: Sequence[DomainEvent], *, actor: Actor, expected_version: int
    ) -> list[Envelope]:
        """One transaction under the append lock; listeners are notified at commit."""
        async with self.pool.acquire() as conn, conn.transaction():
            await self.store.lock(conn)
            return await self.store.append(
                conn, events, actor=actor, expected_version=expected_version
            )

    async def load_stream(self, key_id: str) -> list[Envelope]:
        async with self.pool.acquire() as conn:
            return await self.store.load_stream(conn, key_id)

    async def read_after(self, position: int, limit: int = 1000) -> list[Envelope]:
        async with self.pool.acquire() as conn:
            return await self.store.read_after(conn, position, limit)

    async def head(self) -> int:
        async with self.pool.acquire() as conn:
            return await self.store.head(conn)
