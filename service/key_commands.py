"""The service layer for key commands: the thin I/O shell around the decider.

One command is one transaction under the log's append lock: replay an
idempotent retry, load the key's stream, check ``If-Match``, count active keys,
decide, append, update the registry, remember the response.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from events.codec import canonical_json
from events.models import Actor, Envelope
from service.clock import utc_now
from service.domain.commands import ActiveKeyQuota, Command, EnableKey, GenerateKey
from service.domain.decider import decide
from service.domain.orgs import SYSTEM_ORG
from service.domain.state import KeyState
from service.errors import KeyledgerError
from service.key_view import render_key
from service.store.event_store import EventStore, LogHead, fold_envelopes
from service.store.idempotency import IdempotencyStore, StoredResponse
from service.store.key_registry import KeyRegistry

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class IdempotentRequest:
    """An ``Idempotency-Key`` and a fingerprint of what it was sent with."""

    key: str
    fingerprint: str

    @staticmethod
    def fingerprint_of(method: str, path: str, body: Any) -> str:
        return hashlib.sha256(f"{method} {path} {canonical_json(body)}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What a command did; ``body`` is the response without any secret."""

    status: int
    body: dict[str, Any]
    state: KeyState | None
    events: tuple[Envelope, ...]
    replayed: bool = False


CommitObserver = Callable[[Sequence[Envelope]], Awaitable[None]]


@dataclass(slots=True)
class _Pending:
    """A command waiting for the writer, and where its outcome goes."""

    command: Command
    org_id: str
    actor: Actor
    if_match: int | None
    idempotent: IdempotentRequest | None
    outcome: asyncio.Future[CommandOutcome]


class KeyCommandHandler:
    """Runs key commands against PostgreSQL.

    Appends are serialized by the log's advisory lock, so a transaction per
    command would cap throughput at one commit (one WAL flush) at a time.
    Instead one writer task per handler takes every command waiting and runs
    them in a single transaction, each in its own savepoint: a batch costs
    one flush, and the commands still apply strictly one after another, each
    seeing the ones before it (active-key counts, idempotency keys). A refusal
    writes nothing, so it needs no savepoint; a database error fails the
    batch, which is then retried one command at a time.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        max_active_keys: int,
        idempotency_ttl_hours: int = 24,
        max_batch: int = 100,
    ) -> None:
        self.pool = pool
        self.max_active_keys = max_active_keys
        self.max_batch = max_batch
        self.store = EventStore()
        self.registry = KeyRegistry()
        self.idempotency = IdempotencyStore(idempotency_ttl_hours)
        self._waiting: list[_Pending] = []
        self._writer: asyncio.Task[None] | None = None
        # Awaited with each batch's new events, in position order, after the commit and
        # before any caller hears back: this replica's in-memory views (the verification
        # index) then reflect a command by the time its response is sent.
        self.committed: list[CommitObserver] = []
        # Raises while the log must not grow: a truncated log (SPEC §10) would give a new
        # event the position of a lost one, and the lost tail could not be re-appended.
        self.write_guard: Callable[[], None] | None = None

    async def handle(
        self,
        command: Command,
        *,
        org_id: str,
        actor: Actor,
        if_match: int | None = None,
        idempotent: IdempotentRequest | None = None,
    ) -> CommandOutcome:
        """Decide and record ``command`` on a key of ``org_id``; returns once committed."""
        if self.write_guard is not None:
            self.write_guard()
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(_Pending(command, org_id, actor, if_match, idempotent, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_all(), name="key-command-writer")
        # shield: a caller that goes away must not cancel a batch other callers share.
        return await asyncio.shield(future)

    async def _write_all(self) -> None:
        while self._waiting:
            batch, self._waiting = (
                self._waiting[: self.max_batch],
                self._waiting[self.max_batch :],
            )
            await self._write_batch(batch)

    async def _write_batch(self, batch: list[_Pending]) -> None:
        try:
            results = await self._commit(batch)
        except (asyncpg.PostgresError, KeyledgerError) as exc:
            if len(batch) == 1:
                results = [exc]
            else:
                # The batch failed as a whole; retry each command alone so that
                # one failing command cannot fail its neighbours.
                for item in batch:
                    await self._write_batch([item])
                return
        except Exception as exc:
            results = [_unavailable(exc)] * len(batch)
        appended = [e for r in results if isinstance(r, CommandOutcome) for e in r.events]
        if appended:
            await self._announce(appended)
        for item, result in zip(batch, results, strict=True):
            if item.outcome.done():
                continue
            if isinstance(result, BaseException):
                item.outcome.set_exception(result)
            else:
                item.outcome.set_result(result)

    async def _announce(self, envelopes: list[Envelope]) -> None:
        for observer in self.committed:
            try:
                await observer(envelopes)
            except Exception:
                # The events are committed whatever an observer does; it catches up later.
                log.exception("commit_observer_failed")

    async def _commit(self, batch: list[_Pending]) -> list[CommandOutcome | KeyledgerError]:
        """Apply ``batch`` in one transaction; refusals are results, not failures."""
        results: list[CommandOutcome | KeyledgerError] = []
        async with self.pool.acquire() as conn, conn.transaction():
            await self.store.lock(conn)
            head = await self.store.read_head(conn)
            start = head.position
            for item in batch:
                try:
                    results.append(await self._apply(conn, item, head))
                except KeyledgerError as exc:
                    # Refusals are decided before anything is written.
                    results.append(exc)
            if head.position > start:
                await self.store.notify(conn, head.position)
        return results

    async def _apply(
        self, conn: asyncpg.Connection, item: _Pending, head: LogHead
    ) -> CommandOutcome:
        """One command inside the batch's transaction, under the append lock."""
        command, org_id, actor, idempotent = item.command, item.org_id, item.actor, item.idempotent
        if idempotent is not None:
            stored = await self.idempotency.find(conn, actor.id, idempotent.key)
            if stored is not None:
                return _replay(stored, idempotent)

        # A GenerateKey names a fresh ULID: its stream is empty (the unique
        # stream-version constraint would catch the impossible collision).
        state = (
            None
            if isinstance(command, GenerateKey)
            else fold_envelopes(await self.store.load_stream(conn, command.key_id))
        )
        if state is not None and state.org_id != org_id:
            state = None  # a key of another org does not exist for this caller
        if state is None and not isinstance(command, GenerateKey):
            raise KeyledgerError("key_not_found", "no such key")
        if item.if_match is not None and (state is None or state.version != item.if_match):
            raise KeyledgerError(
                "version_mismatch",
                "the key has changed since the version given in If-Match",
                {"current_version": state.version if state else None},
            )
        command = await self._with_quota(conn, command, state, org_id)

        events = decide(command, state)
        appended = await self.store.append(
            conn, events, actor=actor, expected_version=state.version if state else 0, head=head
        )
        new_state = fold_envelopes(appended, state)
        if appended:
            await self.registry.save(conn, new_state)
        outcome = CommandOutcome(
            status=201 if isinstance(command, GenerateKey) else 200,
            body={"key": render_key(new_state, command.issued_at), "position": new_state.position},
            state=new_state,
            events=tuple(appended),
        )
        if idempotent is not None:
            await self.idempotency.remember(
                conn,
                actor.id,
                idempotent.key,
                StoredResponse(idempotent.fingerprint, outcome.status, outcome.body),
            )
        return outcome

    async def _with_quota(
        self, conn: asyncpg.Connection, command: Command, state: KeyState | None, org_id: str
    ) -> Command:
        if org_id == SYSTEM_ORG:
            return command
        if isinstance(command, GenerateKey):
            environment = command.environment
        elif isinstance(command, EnableKey) and state is not None:
            environment = state.environment
        else:
            return command
        active = await self.registry.count_active(conn, org_id, environment, command.issued_at)
        return dataclasses.replace(
            command, quota=ActiveKeyQuota(active=active, limit=self.max_active_keys)
        )

    async def due_for_expiry(self) -> list[tuple[str, str]]:
        """(key_id, org_id) of keys past ``expires_at`` without a ``KeyExpired`` yet."""
        async with self.pool.acquire() as conn:
            return await self.registry.due_for_expiry(conn, utc_now())

    async def load_state(self, org_id: str, key_id: str) -> KeyState | None:
        """A key's current state straight from its stream (None if absent or foreign)."""
        async with self.pool.acquire() as conn:
            state = await self.store.load_state(conn, key_id)
        return state if state is not None and state.org_id == org_id else None


def _unavailable(cause: BaseException | None) -> KeyledgerError:
    error = KeyledgerError("unavailable", "the command was not recorded; retry")
    error.__cause__ = cause
    return error


def _replay(stored: StoredResponse, idempotent: IdempotentRequest) -> CommandOutcome:
    if stored.request_hash != idempotent.fingerprint:
        raise KeyledgerError(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        )
    return CommandOutcome(
        status=stored.status, body=stored.body, state=None, events=(), replayed=True
    )
