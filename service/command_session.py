"""The steps of one key command, over whatever store it runs against.

A command is decided and recorded the same way whether it runs in a
PostgreSQL transaction of the group commit (``service.key_commands``) or
against the in-memory stores (``service.in_memory_commands``, for tests and
experiments): replay an idempotent retry, fold the key's stream, check
``If-Match``, count active keys, decide, append, update the registry,
remember the outcome. Those steps live here, once; a ``CommandSession`` is
what they need from storage for the one command, already under whatever lock
serializes appends.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from events.codec import canonical_json
from events.models import Actor, DomainEvent, Envelope
from events.vocabulary import Environment
from service.domain.commands import (
    ActiveKeyQuota,
    Command,
    EnableKey,
    GenerateKey,
    with_quota,
)
from service.domain.decider import decide
from service.domain.orgs import SYSTEM_ORG
from service.domain.state import KeyState
from service.errors import KeyledgerError
from service.key_view import render_key
from service.store.event_rows import Committed, UnfoldableStream, storable_stream
from service.store.event_store import fold_committed, fold_stream
from service.store.idempotency import StoredOutcome
from service.store.key_registry import CallerStanding
from service.verification.callers import Caller


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
    # The events appended, with what their writer made of them (``Committed``).
    committed: tuple[Committed, ...]
    replayed: bool = False

    @property
    def events(self) -> tuple[Envelope, ...]:
        """The envelopes appended."""
        return tuple(item.envelope for item in self.committed)


@dataclass(eq=False, slots=True)
class CommandRequest:
    """One command and the conditions it was made under."""

    command: Command
    org_id: str
    actor: Actor
    if_match: int | None = None
    idempotent: IdempotentRequest | None = None
    caller: Caller | None = None


class CommandSession(Protocol):
    """What one command reads and writes, inside the unit that records it atomically."""

    async def recorded_outcome(self, caller_id: str, idempotency_key: str) -> StoredOutcome | None:
        """The outcome remembered for this caller's ``Idempotency-Key``, if still kept."""

    async def stream(self, key_id: str) -> list[Envelope]:
        """The key's events in stream order; ``UnfoldableStream`` if one is unreadable."""

    async def count_active(self, org_id: str, environment: Environment, now: datetime) -> int:
        """Keys of ``org_id`` in ``environment`` that hold an active slot at ``now``."""

    async def append(
        self, events: Sequence[DomainEvent], *, actor: Actor, expected_version: int
    ) -> list[Committed]:
        """Append to the key's stream, decided against ``expected_version``."""

    async def save(self, state: KeyState) -> None:
        """Record ``state`` as the key's registry entry."""

    async def remember(self, caller_id: str, idempotency_key: str, outcome: StoredOutcome) -> None:
        """Keep ``outcome`` for retries with the same ``Idempotency-Key``."""


def check_caller(standing: CallerStanding | None, caller: Caller, now: datetime) -> None:
    """401 ``api_key_inactive`` unless the service key making a command may still act."""
    if standing is None or not standing.admits(caller.secret_hash, now):
        raise KeyledgerError("api_key_inactive", "the service key is no longer active")


async def record_command(
    session: CommandSession, request: CommandRequest, *, max_active_keys: int
) -> CommandOutcome:
    """Decide ``request``'s command and record it through ``session``; its outcome.

    Refusals raise ``KeyledgerError``; the caller undoes whatever ``session``
    wrote for this command (a savepoint, a rolled-back transaction).
    """
    command, org_id, actor, idempotent = (
        request.command,
        request.org_id,
        request.actor,
        request.idempotent,
    )
    if idempotent is not None:
        stored = await session.recorded_outcome(actor.id, idempotent.key)
        if stored is not None:
            return _replay(stored, idempotent)

    # A GenerateKey names a fresh ULID: its stream is empty (the unique
    # stream-version constraint would catch the impossible collision).
    state = None if isinstance(command, GenerateKey) else await _state(session, command, org_id)
    if state is not None and state.org_id != org_id:
        state = None  # a key of another org does not exist for this caller
    if state is None and not isinstance(command, GenerateKey):
        raise KeyledgerError("key_not_found", "no such key")
    if request.if_match is not None and (state is None or state.version != request.if_match):
        raise KeyledgerError(
            "version_mismatch",
            "the key has changed since the version given in If-Match",
            {"current_version": state.version if state else None},
        )
    command = await _with_quota(session, command, state, org_id, max_active_keys)

    events = decide(command, state)
    appended = await session.append(
        events, actor=actor, expected_version=state.version if state else 0
    )
    new_state = fold_committed(appended, state)
    # Only a GenerateKey starts from no state, and it either appends or raises.
    assert new_state is not None, "a command without a key produced no event"
    if appended:
        await session.save(new_state)
    outcome = CommandOutcome(
        key=render_key(new_state, command.issued_at),
        position=new_state.position,
        created=isinstance(command, GenerateKey),
        state=new_state,
        committed=tuple(appended),
    )
    if idempotent is not None:
        await session.remember(
            actor.id,
            idempotent.key,
            StoredOutcome(idempotent.fingerprint, outcome.created, outcome.key, outcome.position),
        )
    return outcome


async def _state(session: CommandSession, command: Command, org_id: str) -> KeyState | None:
    """The key's state folded from its stream; 409 ``key_quarantined`` if it does not fold.

    Nothing can be decided on a state that cannot be read (docs/security.md §5): the
    command fails alone and writes nothing.
    """
    try:
        envelopes = await session.stream(command.key_id)
        storable_stream(envelopes)
        return fold_stream(envelopes)
    except UnfoldableStream as exc:
        raise exc.refusal(org_id) from None


async def _with_quota(
    session: CommandSession,
    command: Command,
    state: KeyState | None,
    org_id: str,
    max_active_keys: int,
) -> Command:
    if org_id == SYSTEM_ORG:
        return command
    if isinstance(command, GenerateKey):
        environment = command.environment
    elif isinstance(command, EnableKey) and state is not None:
        environment = state.environment
    else:
        return command
    active = await session.count_active(org_id, environment, command.issued_at)
    return with_quota(command, ActiveKeyQuota(active=active, limit=max_active_keys))


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
        committed=(),
        replayed=True,
    )
