"""The service layer for key commands: the thin I/O shell around the decider.

Each command runs under the log's append lock, in a batch shared with other
callers' commands (``service.group_commit``): re-check the calling service key,
replay an idempotent retry, load the key's stream, check ``If-Match``, count
active keys, decide, append, update the registry, remember the response.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
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
from service.group_commit import MAX_BATCH, GroupCommit
from service.key_view import render_key
from service.store.event_rows import storable_stream
from service.store.event_store import EventStore, LogHead, UnfoldableStream, fold_envelopes
from service.store.idempotency import IdempotencyStore, StoredOutcome
from service.store.key_registry import CallerStanding, KeyRegistry
from service.verification.callers import Caller

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
    """What a command did, in domain terms; how to answer it is up to the entrypoint.

    ``key`` is the key as callers see it at the command's time
    (``service.key_view.render_key``), never with a secret. A replay of an
    idempotent retry has no ``state`` and no ``events``: only what the first
    run recorded (``key``, ``position``, ``created``).
    """

    key: dict[str, Any]
    position: int
    # A new key was generated (HTTP answers 201 for it).
    created: bool
    state: KeyState | None
    events: tuple[Envelope, ...]
    replayed: bool = False


CommitObserver = Callable[[Sequence[Envelope]], Awaitable[None]]


@dataclass(eq=False, slots=True)
class _Request:
    """One command as the writer takes it."""

    command: Command
    org_id: str
    actor: Actor
    if_match: int | None
    idempotent: IdempotentRequest | None
    caller: Caller | None


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
        self._group: GroupCommit[_Request, CommandOutcome] = GroupCommit(
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
            _Request(command, org_id, actor, if_match, idempotent, caller)
        )

    # -- the batch (service.group_commit.BatchWork) ---------------------------

    async def begin(self, conn: asyncpg.Connection, requests: Sequence[_Request]) -> _Batch:
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
        self, conn: asyncpg.Connection, batch: _Batch, request: _Request
    ) -> CommandOutcome:
        if request.caller is not None:
            standing = batch.callers.get(request.caller.key_id)
            if standing is None or not standing.admits(request.caller.secret_hash, batch.now):
                raise KeyledgerError("api_key_inactive", "the service key is no longer active")
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
        self, conn: asyncpg.Connection, item: _Request, head: LogHead
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
            None if isinstance(command, GenerateKey) else await self._state(conn, command, org_id)
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
        # Only a GenerateKey starts from no state, and it either appends or raises.
        assert new_state is not None, "a command without a key produced no event"
        if appended:
            await self.registry.save(conn, new_state)
        outcome = CommandOutcome(
            key=render_key(new_state, command.issued_at),
            position=new_state.position,
            created=isinstance(command, GenerateKey),
            state=new_state,
            events=tuple(appended),
        )
        if idempotent is not None:
            await self.idempotency.remember(
                conn,
                actor.id,
                idempotent.key,
                StoredOutcome(
                    idempotent.fingerprint, outcome.created, outcome.key, outcome.position
                ),
            )
        return outcome

    async def _state(
        self, conn: asyncpg.Connection, command: Command, org_id: str
    ) -> KeyState | None:
        """The key's state folded from its stream; 409 ``key_quarantined`` if it does not fold.

        Nothing can be decided on a state that cannot be read (docs/security.md §5): the
        command fails alone, inside its savepoint, and writes nothing.
        """
        try:
            envelopes = await self.store.load_stream(conn, command.key_id)
            storable_stream(envelopes)
            return self.store.fold(envelopes)
        except UnfoldableStream as exc:
            raise exc.refusal(org_id) from None

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
        """A key's current state straight from its stream (None if absent or foreign).

        A key whose stream does not fold raises 409 ``key_quarantined``.
        """
        async with self.pool.acquire() as conn:
            try:
                state = await self.store.load_state(conn, key_id)
            except UnfoldableStream as exc:
                raise exc.refusal(org_id) from None
        return state if state is not None and state.org_id == org_id else None


def _replay(stored: StoredOutcome, idempotent: IdempotentRequest) -> CommandOutcome:
    if stored.request_hash != idempotent.fingerprint:
        raise KeyledgerError(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        )
    return CommandOutcome(
        key=stored.key,
        position=stored.position,
        created=stored.created,
        state=None,
        events=(),
        replayed=True,
    )
