"""Group commit: many callers' commands in one transaction, each failing alone.

Appends are serialized by the log's advisory lock, so a transaction per
command would cap throughput at one commit (one WAL flush) at a time. A
``GroupCommit`` runs one writer task that opens a transaction and takes the lock
(``BatchWork.opening``, sent with the ``BEGIN``: one round trip), and only then
takes every command waiting (up to
``max_batch``: the batch grows with the queue, and with the time the lock was
held elsewhere, by another replica) and hands them to the ``BatchWork`` in
that one transaction. The work is set-based
(``service.key_commands``): a constant number of round trips per batch,
whatever its size, the commands decided in memory one after another, each
seeing the ones before it (``service.command_batch``).

Isolation (docs/security.md §3: one command's failure fails that command alone):

- A command's refusal, or anything else it raises while it is decided (an
  unstorable value, a bug), is that command's result: it is decided fully in
  memory before anything is written, and leaves nothing in the batch.
- Should the batch's writes fail anyway (a constraint no check foresaw, the
  connection lost, the commit refused), nothing of the batch is kept and its
  commands are retried one transaction each, so a command that breaks its
  transaction can only break its own.
- A wait that runs out (the append lock's ``lock_timeout``, the pool's
  ``command_timeout``) fails the batch with 503 ``unavailable`` and
  ``Retry-After`` at once: retrying one by one would only multiply the wait.
- Bounded queue: with ``max_waiting`` commands already waiting, a new one is
  refused at once with 503 ``overloaded`` and a ``Retry-After`` estimated from
  the recent commit rate, rather than queued without bound.
- Every caller hears back, whatever happens to the writer: its future gets a
  result or an error. A caller that goes away before its command is taken
  drops it; once taken, the command commits fully or not at all.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeAlias, TypeVar

import asyncpg
import structlog

from service.errors import KeyledgerError
from service.store.event_rows import UnstorableValue
from service.store.held_connection import HeldConnection

log = structlog.get_logger(__name__)

RETRY_AFTER_SECONDS = 1
# Commands per transaction at most: a batch's statements grow with it, and so does the
# wait of the callers whose commands it holds.
MAX_BATCH = 256
# Commands waiting at most before new ones are refused (503 ``overloaded``).
MAX_WAITING = 256
# Retry-After for ``overloaded`` stays within these bounds (seconds).
_RETRY_AFTER_RANGE = (1, 30)
_LOG_REFUSALS_EVERY_SECONDS = 5.0

# Waits that ran out. Retrying command by command would wait again for each one.
_TIMEOUTS: tuple[type[BaseException], ...] = (
    TimeoutError,
    asyncpg.LockNotAvailableError,
    asyncpg.QueryCanceledError,
)
# The database (or the way to it) failing rather than one command.
_OUTAGES: tuple[type[BaseException], ...] = (
    *_TIMEOUTS,
    OSError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.exceptions.OperatorInterventionError,
)
# Input no validation caught that the encoder or PostgreSQL cannot store: the
# request's fault, so a 422 (a retry would fail the same way), not a 503.
_UNSTORABLE: tuple[type[BaseException], ...] = (UnicodeError, UnstorableValue, asyncpg.DataError)


def _unstorable(exc: BaseException) -> bool:
    # asyncpg's client-side "invalid input" errors are InterfaceErrors that are also ValueErrors.
    return isinstance(exc, _UNSTORABLE) or (
        isinstance(exc, asyncpg.InterfaceError) and isinstance(exc, ValueError)
    )


def _outage(exc: BaseException) -> bool:
    return isinstance(exc, _OUTAGES) and not _unstorable(exc)


Item = TypeVar("Item")
Result = TypeVar("Result")
# A work that takes any item of a kind also takes the narrower items of a GroupCommit.
WorkItem = TypeVar("WorkItem", contravariant=True)


class BatchWork(Protocol[WorkItem, Result]):
    """What a ``GroupCommit`` runs: one transaction of items, under the caller's lock."""

    @property
    def opening(self) -> str:
        """The first statements of each transaction (take the lock), sent with its ``BEGIN``
        in one round trip, before its items are chosen; no parameters, no rows."""

    async def write(
        self, conn: asyncpg.Connection, items: Sequence[WorkItem]
    ) -> Sequence[Result | Exception]:
        """Write ``items`` in ``conn``'s transaction; each item's result or failure, in order.

        A ``KeyledgerError`` is a refusal. Raising fails the whole batch (it is
        rolled back, and each item retried alone).
        """

    async def after_commit(self, results: Sequence[Result]) -> None:
        """After the commit, before any caller hears back."""


@dataclass(eq=False, slots=True)
class _Pending(Generic[Item, Result]):
    item: Item
    outcome: asyncio.Future[Result] = field(repr=False)


Outcome: TypeAlias = Result | KeyledgerError


class GroupCommit(Generic[Item, Result]):
    """Batches items from concurrent callers into shared transactions (see module doc)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        work: BatchWork[Item, Result],
        *,
        max_batch: int = MAX_BATCH,
        max_waiting: int = MAX_WAITING,
        name: str = "group-commit",
    ) -> None:
        self.pool = pool
        self.work = work
        self.max_batch = max_batch
        self.max_waiting = max_waiting
        self.name = name
        self._waiting: list[_Pending[Item, Result]] = []
        self._writer: asyncio.Task[None] | None = None
        # The writer's connection, kept from batch to batch while commands keep coming:
        # giving it back to the pool costs a round trip (its reset) every time.
        self._conn = HeldConnection(pool)
        # Items committed per second, smoothed over recent batches (for Retry-After).
        self._rate = 0.0
        # Items refused since the last log line about it, and when that was.
        self._refused = 0
        self._refusals_logged_at = -math.inf

    @property
    def waiting(self) -> int:
        """Items queued and not yet taken into a batch."""
        return len(self._waiting)

    async def submit(self, item: Item) -> Result:
        """Run ``item`` in the next batch; its result, or its ``KeyledgerError``.

        With ``max_waiting`` items already queued, 503 ``overloaded`` at once.
        """
        if len(self._waiting) >= self.max_waiting:
            raise self._overloaded()
        pending: _Pending[Item, Result] = _Pending(item, asyncio.get_running_loop().create_future())
        self._waiting.append(pending)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name=self.name)
        try:
            # shield: a caller that goes away must not cancel a batch other callers share.
            return await asyncio.shield(pending.outcome)
        except asyncio.CancelledError:
            if pending in self._waiting:
                # Not taken yet: it is never written.
                self._waiting.remove(pending)
                pending.outcome.cancel()
            else:
                # Taken: it commits fully or not at all; nobody reads the outcome now.
                pending.outcome.add_done_callback(_discard)
            raise

    def _overloaded(self) -> KeyledgerError:
        """503 ``overloaded``; Retry-After is how long the queue takes to drain at the
        recent rate (within ``_RETRY_AFTER_RANGE``)."""
        low, high = _RETRY_AFTER_RANGE
        # No batch finished yet (a replica just started): its first batch is usually under
        # way and short; the longest wait would send every client away for the longest time.
        drain = len(self._waiting) / self._rate if self._rate > 0 else low
        retry_after = min(high, max(low, math.ceil(drain)))
        self._refused += 1
        now = time.monotonic()
        if now - self._refusals_logged_at >= _LOG_REFUSALS_EVERY_SECONDS:
            # Once in a while, with a count: a line per refusal would add to the overload.
            log.warning(
                "command_queue_full",
                waiting=len(self._waiting),
                refused=self._refused,
                retry_after=retry_after,
            )
            self._refused, self._refusals_logged_at = 0, now
        return KeyledgerError(
            "overloaded",
            "too many commands are waiting to be recorded; retry later",
            {"retry_after": retry_after},
        )

    async def _write_all(self) -> None:
        """The writer: batch after batch until nobody waits. It never strands a caller."""
        try:
            await self._write_while_waiting()
        except BaseException as exc:
            waiting, self._waiting = self._waiting, []
            _settle_all(waiting, exc)
            raise

    async def _write_while_waiting(self) -> None:
        while self._waiting:
            batch: list[_Pending[Item, Result]] = []
            started = time.perf_counter()
            try:
                await self._write_batch(batch)
            except BaseException as exc:
                # Not reached by any failure of a command or of the database (those are
                # results); this is a bug or the task being cancelled at shutdown.
                _settle_all(batch, exc)
                if not isinstance(exc, Exception):
                    waiting, self._waiting = self._waiting, []
                    _settle_all(waiting, exc)
                    raise
                log.error("group_commit_writer_failed", exc_info=exc)
            rate = len(batch) / max(time.perf_counter() - started, 1e-6)
            self._rate = rate if self._rate == 0 else 0.8 * self._rate + 0.2 * rate

    def _take(self, batch: list[_Pending[Item, Result]]) -> None:
        """Into ``batch``: everything waiting, up to ``max_batch``, first come first."""
        taken, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
        batch.extend(taken)

    async def _write_batch(self, batch: list[_Pending[Item, Result]]) -> None:
        """Write the next batch, chosen into ``batch`` once the lock is held (see ``_commit``)."""
        try:
            results = await self._commit(batch)
        except _TIMEOUTS as exc:
            log.warning("group_commit_timed_out", commands=len(batch), error=type(exc).__name__)
            results = [_unavailable(exc) for _ in batch]
        except Exception as exc:
            if len(batch) == 1:
                results = [error_for(exc)]
            else:
                log.warning(
                    "group_commit_batch_failed", commands=len(batch), error=type(exc).__name__
                )
                await self._retry_alone(batch)
                return
        await self._deliver(batch, results)

    async def _retry_alone(self, batch: list[_Pending[Item, Result]]) -> None:
        """Each command of a failed batch in its own transaction, in order."""
        for number, pending in enumerate(batch):
            try:
                results = await self._commit([pending])
            except Exception as exc:
                await self._deliver([pending], [error_for(exc)])
                if _outage(exc):
                    # The database, not this command: the rest would only wait to fail too.
                    rest = batch[number + 1 :]
                    await self._deliver(rest, [_unavailable(exc) for _ in rest])
                    return
                continue
            await self._deliver([pending], results)

    async def _commit(self, batch: list[_Pending[Item, Result]]) -> list[Outcome[Result]]:
        """One transaction for ``batch``; per-item failures are results, not raised.

        An empty ``batch`` is chosen once the transaction is open (the lock
        taken, whatever the outcome): everything that came while waiting for
        the lock, held by another replica, joins this batch rather than the
        next, so the lock's hand-off between replicas makes batches larger,
        not more. Should the opening fail, the callers waiting then are the
        batch that hears of it.
        """
        choose = not batch
        conn = await self._conn.acquire()
        try:
            try:
                # BEGIN and the opening (the lock) in one round trip: asyncpg's transaction
                # block would send BEGIN alone first.
                await conn.execute(f"BEGIN; {self.work.opening}")
            finally:
                if choose:
                    self._take(batch)
            items = [pending.item for pending in batch]
            written = await self.work.write(conn, items) if items else []
            await conn.execute("COMMIT")
        except BaseException:
            await _roll_back(conn)
            # Whatever failed may have broken the connection: the next batch takes another.
            await self._conn.release()
            raise
        self._conn.done()
        return [error_for(r) if isinstance(r, Exception) else r for r in written]

    async def _deliver(
        self, batch: list[_Pending[Item, Result]], results: list[Outcome[Result]]
    ) -> None:
        done = [r for r in results if not isinstance(r, KeyledgerError)]
        if done:
            try:
                await self.work.after_commit(done)
            except Exception:
                # The commit stands whatever happens after it; tell the callers so.
                log.exception("group_commit_observer_failed")
        for pending, result in zip(batch, results, strict=True):
            if pending.outcome.done():
                continue
            if isinstance(result, KeyledgerError):
                pending.outcome.set_exception(result)
            else:
                pending.outcome.set_result(result)


async def _roll_back(conn: asyncpg.Connection) -> None:
    """End the batch's transaction, if it is still open, before the connection goes back."""
    try:
        if not conn.is_closed() and conn.is_in_transaction():
            await conn.execute("ROLLBACK")
    except Exception:
        # Lost (the pool may have taken the proxy back already) or busy (a cancelled
        # statement): there is nothing to roll back, or the pool's reset finishes it.
        log.debug("group_commit_rollback_failed", exc_info=True)


def error_for(exc: BaseException) -> KeyledgerError:
    """What the caller of a failed command hears (logged here when unexpected)."""
    if isinstance(exc, KeyledgerError):
        return exc
    if _unstorable(exc):
        # The type only: a message may quote the offending value.
        log.warning("command_unstorable", error=type(exc).__name__)
        error = KeyledgerError(
            "validation_error", "the request holds a value that cannot be stored"
        )
        error.__cause__ = exc
        return error
    if _outage(exc):
        log.warning("command_failed_database_unavailable", error=type(exc).__name__)
    else:
        log.error("command_failed", exc_info=exc)
    return _unavailable(exc)


def _unavailable(cause: BaseException | None) -> KeyledgerError:
    error = KeyledgerError(
        "unavailable",
        "the command was not recorded; retry",
        {"retry_after": RETRY_AFTER_SECONDS},
    )
    error.__cause__ = cause
    return error


def _settle_all(batch: list[_Pending[Any, Any]], cause: BaseException) -> None:
    """Answer every caller still waiting when the writer itself failed or was stopped.

    The batch may have committed just before, so the message does not claim
    otherwise: a retry with the same ``Idempotency-Key`` finds out safely.
    """
    for pending in batch:
        if not pending.outcome.done():
            error = KeyledgerError(
                "unavailable",
                "the command may not have been recorded; retry with the same Idempotency-Key",
                {"retry_after": RETRY_AFTER_SECONDS},
            )
            error.__cause__ = cause
            pending.outcome.set_exception(error)


def _discard(future: asyncio.Future[Any]) -> None:
    """Mark a nobody-awaits outcome as read (no "exception never retrieved")."""
    if not future.cancelled():
        future.exception()
