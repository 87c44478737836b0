"""The service layer for key commands against PostgreSQL: the I/O shell around the decider.

Each command runs under the log's append lock, in a batch shared with other
callers' commands (``service.group_commit``): re-check the calling service key,
then the steps of ``service.command_session.record_command`` (replay an
idempotent retry, load the key's stream, check ``If-Match``, count active
keys, decide, append, update the registry, remember the response) on the
batch's connection.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg
import structlog

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
from service.domain.commands import Command
from service.domain.state import KeyState
from service.group_commit import MAX_BATCH, GroupCommit
from service.store.event_store import EventStore, LogHead, UnfoldableStream
from service.store.idempotency import IdempotencyStore, StoredOutcome
from service.store.key_registry import CallerStanding, KeyRegistry
from service.verification.callers import Caller

log = structlog.get_logger(__name__)


CommitObserver = Callable[[Sequence[Envelope]], Awaitable[None]]


@dataclass(slots=True)
class _Batch:
    """What a batch carries from one command to the next, in memory."""

    head: LogHead
    start: int
    now: datetime
    # Service keys making the batch's commands, as committed (or as changed by the batch).
    callers: dict[str, CallerStanding]


class KeyCommandHandler:
    """Runs key commands against PostgreSQL, many callers' at a time.

    Commands go through a ``GroupCommit`` (see ``service.group_commit``): one
    transaction per batch under the log's append lock, each command of a
    batch of several in its own savepoint, so a batch costs one flush and a
    command's failure fails it alone (a lost connection fails the batch, whose
    commands are then retried one transaction each). The append lock is waited for at most
    ``lock_timeout_seconds`` (then 503 ``unavailable``, nothing written).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_active_keys: int,
        idempotency_ttl_hours: int = 24,
        max_batch: int = MAX_BATCH,
        lock_timeout_seconds: float | None = None,
    ) -> None:
        self.pool = pool
        self.max_active_keys = max_active_keys
        self.lock_timeout_seconds = lock_timeout_seconds
        self.store = EventStore()
        self.registry = KeyRegistry()
        self.idempotency = IdempotencyStore(idempotency_ttl_hours)
        self._group: GroupCommit[CommandRequest, CommandOutcome] = GroupCommit(
            pool, self, max_batch=max_batch, name="key-command-writer"
        )
        # Awaited with each batch's new events, in position order, after the commit and
        # before any caller hears back: this replica's in-memory views (the verification
        # index) then reflect a command by the time its response is sent.
        self.committed: list[CommitObserver] = []
        # Raises while the log must not grow: a truncated log (docs/security.md §6) would
        # give a new event the position of a lost one, and the lost tail could not be
        # re-appended.
        self.write_guard: Callable[[], None] | None = None
        # Raises when the head read under the append lock is behind what this process has
        # already seen: a cut that the periodic witness check has not caught yet.
        self.head_guard: Callable[[int], None] | None = None

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
        """Decide and record ``command`` on a key of ``org_id``; returns once committed.

        ``caller``, the service key making the command, is checked again inside
        the transaction: once its revocation, disabling or expiry has committed,
        its commands are refused (401 ``api_key_inactive``) on every replica,
        whatever this replica's index has heard. The CLI and the expiry sweeper
        pass none.
        """
        if self.write_guard is not None:
            self.write_guard()
        return await self._group.submit(
            CommandRequest(command, org_id, actor, if_match, idempotent, caller)
        )

    # -- the batch (service.group_commit.BatchWork) ---------------------------

    async def begin(self, conn: asyncpg.Connection, requests: Sequence[CommandRequest]) -> _Batch:
        """Take the append lock, then read the log head and the callers' standing."""
        await self.store.lock(conn, wait_seconds=self.lock_timeout_seconds)
        key_ids = list({r.caller.key_id for r in requests if r.caller is not None})
        callers = await self.registry.standings(conn, key_ids) if key_ids else {}
        head = await self.store.read_head(conn)
        if self.head_guard is not None:
            self.head_guard(head.position)
        return _Batch(head=head, start=head.position, now=utc_now(), callers=callers)

    def mark(self, batch: _Batch) -> tuple[int, str]:
        return batch.head.position, batch.head.hash

    def undo(self, batch: _Batch, mark: tuple[int, str]) -> None:
        # The failed command's events were rolled back: the next one takes their positions.
        batch.head.position, batch.head.hash = mark

    async def apply(
        self, conn: asyncpg.Connection, batch: _Batch, request: CommandRequest
    ) -> CommandOutcome:
        if request.caller is not None:
            check_caller(batch.callers.get(request.caller.key_id), request.caller, batch.now)
        outcome = await self._apply(conn, request, batch.head)
        state = outcome.state
        if state is not None and state.key_id in batch.callers:
            # A later command of this batch made with this key sees what this one did.
            batch.callers[state.key_id] = CallerStanding.of(state)
        return outcome

    async def end(self, conn: asyncpg.Connection, batch: _Batch) -> None:
        if batch.head.position > batch.start:
            await self.store.notify(conn, batch.head.position)

    async def after_commit(self, outcomes: Sequence[CommandOutcome]) -> None:
        appended = [e for outcome in outcomes for e in outcome.events]
        if not appended:
            return
        for observer in self.committed:
            try:
                await observer(appended)
            except Exception:
                # The events are committed whatever an observer does; it catches up later.
                log.exception("commit_observer_failed")

    # -- one command ------------------------------------------------------------

    async def _apply(
        self, conn: asyncpg.Connection, item: CommandRequest, head: LogHead
    ) -> CommandOutcome:
        """One command inside the batch's transaction, under the append lock."""
        session = _PostgresSession(self, conn, head)
        return await record_command(session, item, max_active_keys=self.max_active_keys)

    async def due_for_expiry(self) -> list[tuple[str, str]]:
        """(key_id, org_id) of keys past ``expires_at`` without a ``KeyExpired`` yet."""
        async with self.pool.acquire() as conn:
            return await self.registry.due_for_expiry(conn, utc_now())

    async def due_for_warning(
        self, horizon: timedelta
    ) -> list[tuple[str, str, datetime, set[tuple[str, str]]]]:
        """Keys expiring within ``horizon``, and the expiry warnings already logged for them."""
        now = utc_now()
        async with self.pool.acquire() as conn:
            return await self.registry.due_for_warning(conn, now, now + horizon)

    async def load_state(self, org_id: str, key_id: str) -> KeyState | None:
        """A key's current state straight from its stream (None if absent or foreign).

        A key whose stream does not fold raises 409 ``key_quarantined``.
        """
        async with self.pool.acquire() as conn:
            try:
                state = await self.store.load_state(conn, key_id)
            except UnfoldableStream as exc:
                raise exc.refusal(org_id) from None
        return state if state is not None and state.org_id == org_id else None


@dataclass(slots=True)
class _PostgresSession:
    """A ``CommandSession`` on the batch's connection, appending at the batch's head."""

    handler: KeyCommandHandler
    conn: asyncpg.Connection
    head: LogHead

    async def recorded_outcome(self, caller_id: str, idempotency_key: str) -> StoredOutcome | None:
        return await self.handler.idempotency.find(self.conn, caller_id, idempotency_key)

    async def stream(self, key_id: str) -> list[Envelope]:
        return await self.handler.store.load_stream(self.conn, key_id)

    async def count_active(self, org_id: str, environment: Environment, now: datetime) -> int:
        return await self.handler.registry.count_active(self.conn, org_id, environment, now)

    async def append(
        self, events: Sequence[DomainEvent], *, actor: Actor, expected_version: int
    ) -> list[Envelope]:
        return await self.handler.store.append(
            self.conn, events, actor=actor, expected_version=expected_version, head=self.head
        )

    async def save(self, state: KeyState) -> None:
        await self.handler.registry.save(self.conn, state)

    async def remember(self, caller_id: str, idempotency_key: str, outcome: StoredOutcome) -> None:
        await self.handler.idempotency.remember(self.conn, caller_id, idempotency_key, outcome)


__all__ = ["CommandOutcome", "CommitObserver", "IdempotentRequest", "KeyCommandHandler"]
