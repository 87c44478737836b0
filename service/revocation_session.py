"""The steps of a bulk revocation, over whatever store it runs against.

Like ``service.command_session`` for one key, written once against a small
``RevocationSession`` protocol, run in one PostgreSQL transaction under the
append lock (``service.key_revocations``) or against the in-memory stores
(``service.in_memory_commands``): replay an idempotent retry, find the keys,
fold each one's stream, decide (``service.domain.bulk_revocation``), append
every ``KeyRevoked``, update the registry, remember the answer. Each step is a
constant number of round trips, whatever the number of keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from events.models import Actor, DomainEvent, Envelope
from service.command_session import IdempotentRequest
from service.domain.bulk_revocation import (
    MAX_SELECTED_KEYS,
    NamedKeys,
    RevokeKeys,
    UnreadableKey,
    check_selectable_org,
    check_selection_size,
    decide_revocations,
)
from service.domain.state import KeyState
from service.errors import KeyledgerError
from service.store.event_rows import UnfoldableStream, storable_stream
from service.store.event_store import fold_envelopes, fold_stream
from service.store.idempotency import StoredAnswer
from service.verification.callers import Caller

_ANSWERED = 200


@dataclass(frozen=True, slots=True)
class RevocationRequest:
    """One bulk revocation and the conditions it was made under."""

    command: RevokeKeys
    org_id: str
    actor: Actor
    idempotent: IdempotentRequest | None = None
    caller: Caller | None = None


@dataclass(frozen=True, slots=True)
class RevocationOutcome:
    """What a bulk revocation did: key ids by what became of them, and the log position
    its answer reflects (the last ``KeyRevoked``, or the head when none was written).

    ``events`` are the appended envelopes (none on a replay)."""

    revoked: tuple[str, ...]
    already_terminal: tuple[str, ...]
    quarantined: tuple[str, ...]
    position: int
    events: tuple[Envelope, ...] = ()
    replayed: bool = False

    def answer(self) -> dict[str, Any]:
        """The answer as callers get it (without ``replayed``)."""
        return {
            "revoked": list(self.revoked),
            "already_terminal": list(self.already_terminal),
            "quarantined": list(self.quarantined),
            "position": self.position,
        }


# A key's events in stream order, or why they cannot be read (one query for all keys).
Stream = list[Envelope] | UnfoldableStream


@dataclass(frozen=True, slots=True)
class StreamAppend:
    """Events of one key, decided against ``expected_version`` of its stream."""

    events: Sequence[DomainEvent]
    expected_version: int


class RevocationSession(Protocol):
    """What a bulk revocation reads and writes, inside the unit that records it atomically."""

    async def recorded_answer(self, caller_id: str, idempotency_key: str) -> StoredAnswer | None:
        """The answer remembered for this caller's ``Idempotency-Key``, if still kept."""

    async def revocable(self, org_id: str, command: RevokeKeys, limit: int) -> list[str]:
        """Up to ``limit`` ids of ``org_id``'s keys not revoked yet that ``command``'s
        selection (``CreatedBy`` or ``AllKeys``) and environment take, oldest first."""

    async def streams(self, key_ids: Sequence[str]) -> dict[str, Stream]:
        """Each key's events in stream order (empty: no such key), or ``UnfoldableStream``."""

    async def append(self, appends: Sequence[StreamAppend], *, actor: Actor) -> list[Envelope]:
        """Append to every key's stream, in order; the envelopes as stored."""

    async def save_all(self, states: Sequence[KeyState]) -> None:
        """Record each state as its key's registry entry."""

    async def remember_answer(
        self, caller_id: str, idempotency_key: str, answer: StoredAnswer
    ) -> None:
        """Keep ``answer`` for retries with the same ``Idempotency-Key``."""

    async def last_position(self) -> int:
        """The log's last position, as this session sees it."""


async def record_revocations(
    session: RevocationSession, request: RevocationRequest
) -> RevocationOutcome:
    """Decide ``request`` and record it through ``session``; its outcome.

    Refusals raise ``KeyledgerError`` before anything is written; the caller
    undoes whatever ``session`` wrote should a later step fail.
    """
    command, idempotent = request.command, request.idempotent
    check_selectable_org(request.org_id, command.selection)
    if idempotent is not None:
        stored = await session.recorded_answer(request.actor.id, idempotent.key)
        if stored is not None:
            return _replay(stored, idempotent)
    if isinstance(command.selection, NamedKeys):
        key_ids = list(dict.fromkeys(command.selection.key_ids))
    else:
        key_ids = await session.revocable(request.org_id, command, MAX_SELECTED_KEYS + 1)
        check_selection_size(len(key_ids))
    streams = await session.streams(key_ids)
    keys = {key_id: _folded(streams[key_id]) for key_id in key_ids if streams.get(key_id)}
    decided = decide_revocations(command, request.org_id, keys)

    appended = await session.append(
        [StreamAppend(r.events, r.state.version) for r in decided.revoked], actor=request.actor
    )
    by_key: dict[str, list[Envelope]] = {}
    for envelope in appended:
        by_key.setdefault(envelope.key_id, []).append(envelope)
    states = [fold_envelopes(by_key[r.state.key_id], r.state) for r in decided.revoked]
    await session.save_all([state for state in states if state is not None])
    outcome = RevocationOutcome(
        revoked=tuple(r.state.key_id for r in decided.revoked),
        already_terminal=decided.already_terminal,
        quarantined=decided.quarantined,
        position=appended[-1].position if appended else await session.last_position(),
        events=tuple(appended),
    )
    if idempotent is not None:
        await session.remember_answer(
            request.actor.id,
            idempotent.key,
            StoredAnswer(idempotent.fingerprint, _ANSWERED, outcome.answer()),
        )
    return outcome


def _folded(stream: Stream) -> KeyState | UnreadableKey:
    """A key's state, or ``UnreadableKey`` when its stream does not fold (docs/security.md §5)."""
    if isinstance(stream, UnfoldableStream):
        return UnreadableKey(stream.org_id)
    try:
        storable_stream(stream)
        state = fold_stream(stream)
    except UnfoldableStream as exc:
        return UnreadableKey(exc.org_id)
    return state if state is not None else UnreadableKey(stream[0].org_id)


def _replay(stored: StoredAnswer, idempotent: IdempotentRequest) -> RevocationOutcome:
    if stored.request_hash != idempotent.fingerprint:
        raise KeyledgerError(
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        )
    answer = stored.response
    return RevocationOutcome(
        revoked=tuple(answer["revoked"]),
        already_terminal=tuple(answer["already_terminal"]),
        quarantined=tuple(answer["quarantined"]),
        position=answer["position"],
        replayed=True,
    )
