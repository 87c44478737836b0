"""Key commands against the in-memory stores: the use cases without a database.

``InMemoryKeyCommands`` runs the same steps as the PostgreSQL command handler
(``service.command_session.record_command``: the same decider, the same
If-Match, quota, idempotency and quarantine rules) against
``service.store.in_memory``; it only replaces the group commit with one lock.
``KeyLifecycle(InMemoryKeyCommands(...), pepper)`` then serves every use case
in memory, for fast service-layer tests and experiments. Nothing is durable,
nothing is published: not for keys in use.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from events.models import Actor, DomainEvent, Envelope
from events.vocabulary import Environment
from service.clock import utc_now
from service.command_session import (
    CommandOutcome,
    CommandRequest,
    IdempotentRequest,
    check_caller,
    record_command,
)
from service.domain.bulk_revocation import CreatedBy, RevokeKeys
from service.domain.commands import Command
from service.domain.state import KeyState
from service.revocation_session import (
    RevocationOutcome,
    RevocationRequest,
    Stream,
    StreamAppend,
    record_revocations,
)
from service.store.event_rows import Committed, UnfoldableStream
from service.store.event_store import fold_stream
from service.store.idempotency import StoredAnswer, StoredOutcome
from service.store.in_memory import InMemoryEventLog, InMemoryIdempotency, InMemoryKeyRegistry
from service.verification.callers import Caller


class InMemoryKeyCommands:
    """A ``KeyCommands`` (``service.key_lifecycle``) over the in-memory stores.

    Commands run one at a time. A refused command writes nothing: every
    refusal of ``record_command`` comes before its first write, and the
    in-memory append is all or nothing.
    """

    def __init__(
        self,
        *,
        max_active_keys: int,
        idempotency_ttl_hours: int = 24,
        log: InMemoryEventLog | None = None,
        registry: InMemoryKeyRegistry | None = None,
        idempotency: InMemoryIdempotency | None = None,
    ) -> None:
        self.max_active_keys = max_active_keys
        self.log = log or InMemoryEventLog()
        self.registry = registry or InMemoryKeyRegistry()
        self.idempotency = idempotency or InMemoryIdempotency(idempotency_ttl_hours)
        self._lock = asyncio.Lock()

    async def handle(
        self,
        command: Command,
        *,
        org_id: str,
        actor: Actor,
        if_match: int | None = None,
        idempotent: IdempotentRequest | None = None,
        caller: Caller | None = None,
    ) -> CommandOutcome:
        """Decide and record ``command`` on a key of ``org_id`` (see ``KeyCommandHandler``)."""
        request = CommandRequest(command, org_id, actor, if_match, idempotent, caller)
        async with self._lock:
            if caller is not None:
                standings = await self.registry.standings([caller.key_id])
                check_caller(standings.get(caller.key_id), caller, utc_now())
            return await record_command(
                _InMemorySession(self), request, max_active_keys=self.max_active_keys
            )

    async def revoke_many(self, request: RevocationRequest) -> RevocationOutcome:
        """Record a bulk revocation, all or nothing (see ``service.key_revocations``)."""
        async with self._lock:
            if request.caller is not None:
                standings = await self.registry.standings([request.caller.key_id])
                check_caller(standings.get(request.caller.key_id), request.caller, utc_now())
            # Every refusal comes before the first write, and nothing after it can fail.
            return await record_revocations(_InMemoryRevocations(self), request)

    async def load_state(self, org_id: str, key_id: str) -> KeyState | None:
        """A key's current state from its stream (None if absent or of another org)."""
        try:
            state = fold_stream(await self.log.load_stream(key_id))
        except UnfoldableStream as exc:
            raise exc.refusal(org_id) from None
        return state if state is not None and state.org_id == org_id else None

    async def due_for_expiry(self) -> list[tuple[str, str]]:
        """(key_id, org_id) of keys past ``expires_at`` without a ``KeyExpired`` yet."""
        return await self.registry.due_for_expiry(utc_now())


@dataclass(slots=True)
class _InMemorySession:
    """A ``CommandSession`` on the in-memory stores."""

    commands: InMemoryKeyCommands

    async def recorded_outcome(self, caller_id: str, idempotency_key: str) -> StoredOutcome | None:
        return await self.commands.idempotency.find(caller_id, idempotency_key)

    async def stream(self, key_id: str) -> list[Envelope]:
        return await self.commands.log.load_stream(key_id)

    async def count_active(self, org_id: str, environment: Environment, now: datetime) -> int:
        return await self.commands.registry.count_active(org_id, environment, now)

    async def append(
        self, events: Sequence[DomainEvent], *, actor: Actor, expected_version: int
    ) -> list[Committed]:
        appended = await self.commands.log.append(
            events, actor=actor, expected_version=expected_version
        )
        return [Committed(envelope) for envelope in appended]

    async def save(self, state: KeyState) -> None:
        await self.commands.registry.save(state)

    async def remember(self, caller_id: str, idempotency_key: str, outcome: StoredOutcome) -> None:
        await self.commands.idempotency.remember(caller_id, idempotency_key, outcome)


@dataclass(slots=True)
class _InMemoryRevocations:
    """A ``RevocationSession`` on the in-memory stores."""

    commands: InMemoryKeyCommands

    async def recorded_answer(self, caller_id: str, idempotency_key: str) -> StoredAnswer | None:
        return await self.commands.idempotency.find_answer(caller_id, idempotency_key)

    async def revocable(self, org_id: str, command: RevokeKeys, limit: int) -> list[str]:
        selection = command.selection
        log = await self.commands.log.read_after(0, await self.commands.log.head())
        created_by = selection.actor_id if isinstance(selection, CreatedBy) else None
        generated = sorted(
            e.key_id
            for e in log
            if e.stream_version == 1 and e.org_id == org_id and created_by in (None, e.actor.id)
        )
        states = await self.commands.registry.states(generated)
        return [
            state.key_id
            for state in states
            if state.status != "revoked" and command.environment in (None, state.environment)
        ][:limit]

    async def streams(self, key_ids: Sequence[str]) -> dict[str, Stream]:
        return {key_id: await self.commands.log.load_stream(key_id) for key_id in key_ids}

    async def append(self, appends: Sequence[StreamAppend], *, actor: Actor) -> list[Envelope]:
        appended: list[Envelope] = []
        for append in appends:
            appended += await self.commands.log.append(
                append.events, actor=actor, expected_version=append.expected_version
            )
        return appended

    async def save_all(self, states: Sequence[KeyState]) -> None:
        for state in states:
            await self.commands.registry.save(state)

    async def remember_answer(
        self, caller_id: str, idempotency_key: str, answer: StoredAnswer
    ) -> None:
        await self.commands.idempotency.remember_answer(caller_id, idempotency_key, answer)

    async def last_position(self) -> int:
        return await self.commands.log.head()
