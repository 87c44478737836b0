"""Bulk revocation against PostgreSQL: one transaction under the log's append lock.

A bulk revocation is one unit: every ``KeyRevoked`` it decides commits
together or not at all. It does not queue behind the group commit's batches
(it may write a thousand events): it takes the same append lock in its own
transaction, as another replica's batch would, with the same bounded wait,
the same re-check of the calling service key, the same truncation guards and
the same answer to a database that fails (503 ``unavailable``, nothing
written). After the commit its events reach this replica's index before the
answer leaves, as any command's do (``KeyCommandHandler.committed``); the
other replicas hear them from the log (``NOTIFY``, JetStream) like any other
events, so a thousand keys are refused everywhere as fast as one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import asyncpg

from events.models import Actor, Envelope
from service.clock import utc_now
from service.domain.bulk_revocation import AllKeys, CreatedBy, RevokeKeys
from service.domain.state import KeyState
from service.revocation_session import (
    RevocationOutcome,
    RevocationRequest,
    Stream,
    StreamAppend,
    record_revocations,
)
from service.store.event_rows import seal_after
from service.store.event_store import LogHead
from service.store.idempotency import StoredAnswer

if TYPE_CHECKING:
    from service.key_commands import KeyCommandHandler


async def revoke_in_postgres(
    handler: KeyCommandHandler, request: RevocationRequest
) -> RevocationOutcome:
    """Record ``request`` in one transaction on ``handler``'s pool, then tell its observers."""

    async def record(
        conn: asyncpg.Connection, head: LogHead
    ) -> tuple[RevocationOutcome, list[Envelope]]:
        outcome = await record_revocations(_PostgresSession(handler, conn, head), request)
        return outcome, list(outcome.events)

    return await handler.append_alone(request.caller, utc_now(), record)


@dataclass(slots=True)
class _PostgresSession:
    """A ``RevocationSession`` on one transaction's connection, appending at ``head``."""

    handler: KeyCommandHandler
    conn: asyncpg.Connection
    head: LogHead

    async def recorded_answer(self, caller_id: str, idempotency_key: str) -> StoredAnswer | None:
        return await self.handler.idempotency.find_answer(self.conn, caller_id, idempotency_key)

    async def revocable(self, org_id: str, command: RevokeKeys, limit: int) -> list[str]:
        selection = command.selection
        assert isinstance(selection, CreatedBy | AllKeys)
        return await self.handler.registry.revocable(
            self.conn,
            org_id,
            environment=command.environment,
            created_by=selection.actor_id if isinstance(selection, CreatedBy) else None,
            limit=limit,
        )

    async def streams(self, key_ids: Sequence[str]) -> dict[str, Stream]:
        return dict(await self.handler.store.load_streams(self.conn, key_ids))

    async def append(self, appends: Sequence[StreamAppend], *, actor: Actor) -> list[Envelope]:
        """Seal every key's events in memory after the head, then one INSERT for all."""
        sealed: list[Envelope] = []
        for append in appends:
            stream = seal_after(
                append.events,
                actor=actor,
                expected_version=append.expected_version,
                position=self.head.position,
                previous_hash=self.head.hash,
            )
            if stream:
                self.head.position, self.head.hash = stream[-1].position, stream[-1].hash
                sealed += stream
        if sealed:
            await self.handler.store.insert_sealed(self.conn, sealed)
        return sealed

    async def save_all(self, states: Sequence[KeyState]) -> None:
        await self.handler.registry.save_all(self.conn, states)

    async def remember_answer(
        self, caller_id: str, idempotency_key: str, answer: StoredAnswer
    ) -> None:
        await self.handler.idempotency.remember_answer(
            self.conn, caller_id, idempotency_key, answer
        )

    async def last_position(self) -> int:
        return self.head.position
