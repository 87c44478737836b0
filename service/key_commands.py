"""The service layer for key commands against PostgreSQL: the I/O shell around the decider.

Each command runs under the log's append lock, in a batch shared with other
callers' commands (``service.group_commit``). A batch is set-based: whatever
its size, under the lock it reads in one query each the log head, the
callers' standing, every stream it names, every active-key count and every
remembered ``Idempotency-Key``; decides every command in memory, in order
(``service.command_batch``: the steps of ``service.command_session.record_command``);
then writes every event in one multi-row INSERT (hash chain computed in
memory), the key registry and the remembered outcomes in one statement
each, and one NOTIFY.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import TypeVar

import asyncpg
import structlog

from events.models import Actor, Envelope
from service.clock import utc_now
from service.command_batch import BatchReads, BatchSnapshot, plan_batch
from service.command_session import (
    CommandOutcome,
    CommandRequest,
    IdempotentRequest,
    check_caller,
)
from service.domain.commands import Command
from service.domain.state import KeyState
from service.errors import KeyledgerError
from service.group_commit import MAX_BATCH, MAX_WAITING, GroupCommit, error_for
from service.key_revocations import revoke_in_postgres
from service.revocation_session import RevocationOutcome, RevocationRequest
from service.store.batch_statements import read_batch, write_batch
from service.store.credit_balances import CreditBalances
from service.store.event_rows import Committed
from service.store.event_store import EventStore, LogHead, UnfoldableStream
from service.store.idempotency import IdempotencyStore
from service.store.key_registry import KeyRegistry
from service.verification.callers import Caller

log = structlog.get_logger(__name__)


# Handed each batch's appended events, in position order (see ``committed`` below).
CommitObserver = Callable[[Sequence[Committed]], Awaitable[None]]
_Result = TypeVar("_Result")


class KeyCommandHandler:
    """Runs key commands against PostgreSQL, many callers' at a time.

    Commands go through a ``GroupCommit`` (see ``service.group_commit``): one
    transaction per batch under the log's append lock, a constant number of
    round trips per batch (see module doc), so a batch costs one flush and a
    command's failure fails it alone (a batch whose writes fail is retried one
    transaction per command). The append lock is waited for at most
    ``lock_timeout_seconds`` (then 503 ``unavailable``, nothing written); with
    ``max_waiting`` commands queued, more are refused (503 ``overloaded``).
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_active_keys: int,
        idempotency_ttl_hours: int = 24,
        max_batch: int = MAX_BATCH,
        max_waiting: int = MAX_WAITING,
        lock_timeout_seconds: float | None = None,
    ) -> None:
        self.pool = pool
        self.max_active_keys = max_active_keys
        self.lock_timeout_seconds = lock_timeout_seconds
        self.store = EventStore()
        self.registry = KeyRegistry()
        self.balances = CreditBalances()
        self.idempotency = IdempotencyStore(idempotency_ttl_hours)
        self._group: GroupCommit[CommandRequest, CommandOutcome] = GroupCommit(
            pool, self, max_batch=max_batch, max_waiting=max_waiting, name="key-command-writer"
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

    async def append_alone(
        self,
        caller: Caller | None,
        now: datetime,
        record: Callable[[asyncpg.Connection, LogHead], Awaitable[tuple[_Result, list[Envelope]]]],
    ) -> _Result:
        """Run ``record`` in a transaction of its own under the append lock, not in a batch
        (a bulk revocation, an identity's or a webhook endpoint's command); its result.

        The same bounded wait for the lock, truncation guards and re-check of the
        calling service key (at ``now``) as a batch; ``record`` gets the log head
        and answers its result and the events it appended, which are NOTIFYed
        and, once committed, handed to the observers. A database failure is
        503 ``unavailable``, nothing written.
        """
        if self.write_guard is not None:
            self.write_guard()
        try:
            async with self.pool.acquire() as conn, conn.transaction():
                await self.store.lock(conn, wait_seconds=self.lock_timeout_seconds)
                head = await self.store.read_head(conn)
                if self.head_guard is not None:
                    self.head_guard(head.position)
                if caller is not None:
                    standings = await self.registry.standings(conn, [caller.key_id])
                    check_caller(standings.get(caller.key_id), caller, now)
                result, appended = await record(conn, head)
                if appended:
                    await self.store.notify(conn, appended[-1].position)
        except KeyledgerError:
            raise
        except Exception as exc:
            # The transaction rolled back: nothing of it was written.
            raise error_for(exc) from exc
        await self.observe([Committed(envelope) for envelope in appended])
        return result

    async def revoke_many(self, request: RevocationRequest) -> RevocationOutcome:
        """Record a bulk revocation in one transaction of its own (``service.key_revocations``)."""
        return await revoke_in_postgres(self, request)

    # -- the batch (service.group_commit.BatchWork) ---------------------------

    @property
    def opening(self) -> str:
        """Take the append lock, waiting ``lock_timeout_seconds`` at most."""
        return self.store.lock_sql(self.lock_timeout_seconds)

    async def write(
        self, conn: asyncpg.Connection, requests: Sequence[CommandRequest]
    ) -> list[CommandOutcome | Exception]:
        """Record ``requests`` in ``conn``'s transaction, set-based (see module doc)."""
        reads = BatchReads.of(requests)
        read = await read_batch(
            conn,
            new_key_ids=reads.new_key_ids,
            counts=reads.counts,
            outcomes=reads.outcomes,
            callers=reads.callers,
            ttl_hours=self.idempotency.ttl_hours,
        )
        if self.head_guard is not None:
            self.head_guard(read.head.position)
        snapshot = BatchSnapshot(
            head=read.head,
            now=utc_now(),
            callers=read.callers,
            streams=await self.store.load_streams(conn, reads.key_ids) if reads.key_ids else {},
            taken=read.taken,
            counts=read.counts,
            outcomes=read.outcomes,
        )
        plan = await plan_batch(requests, snapshot, max_active_keys=self.max_active_keys)
        if plan.committed or plan.remembered:
            await write_batch(conn, plan.committed, plan.registry.values(), plan.remembered)
        return plan.outcomes

    async def after_commit(self, outcomes: Sequence[CommandOutcome]) -> None:
        await self.observe([item for outcome in outcomes for item in outcome.committed])

    async def observe(self, appended: Sequence[Committed]) -> None:
        """Hand newly committed events to every observer (``committed``), in order."""
        if not appended:
            return
        for observer in self.committed:
            try:
                await observer(appended)
            except Exception:
                # The events are committed whatever an observer does; it catches up later.
                log.exception("commit_observer_failed")

    async def due_for_expiry(self) -> list[tuple[str, str]]:
        """(key_id, org_id) of keys past ``expires_at`` without a ``KeyExpired`` yet."""
        async with self.pool.acquire() as conn:
            return await self.registry.due_for_expiry(conn, utc_now())

    async def due_for_refill(self) -> list[tuple[str, str]]:
        """(key_id, org_id) of keys whose next credit refill period has begun."""
        async with self.pool.acquire() as conn:
            return await self.balances.due_for_refill(conn, utc_now())

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


__all__ = ["CommandOutcome", "CommitObserver", "IdempotentRequest", "KeyCommandHandler"]
