"""A batch of key commands decided in memory: the pure half of the group commit.

The group commit (``service.group_commit``) reads, under the append lock and
in a constant number of queries, everything a batch of commands can ask for
(``BatchReads``: the streams of every key the batch names, the active-key
counts, the remembered ``Idempotency-Key`` outcomes, the callers' standing),
as a ``BatchSnapshot``. ``plan_batch`` then runs each command, in order,
through the same steps as everywhere else (``service.command_session.record_command``)
against an in-memory session over that snapshot and what the commands before
it did: a command sees its predecessors' keys, counts, remembered outcomes
and log head, exactly as if they had been written one by one. It does no I/O.

Every check that would otherwise fail a write is made here, per command,
before anything is sent (stream versions already taken, text PostgreSQL
cannot store): a command that fails leaves no trace in the plan, and its
neighbours go on. The plan's rows are then written set-based, one statement
per table (``service.key_commands``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeAlias, get_args

from events.models import Actor, DomainEvent, Envelope
from events.vocabulary import Environment
from service.command_session import CommandOutcome, CommandRequest, check_caller, record_command
from service.domain.commands import EnableKey, GenerateKey
from service.domain.orgs import SYSTEM_ORG
from service.domain.state import KeyState
from service.errors import KeyledgerError
from service.store.batch_statements import CountKey, OutcomeKey
from service.store.event_rows import (
    Committed,
    UnfoldableStream,
    UnstorableValue,
    check_storable,
    seal_committed_after,
)
from service.store.event_store import LogHead, fold_stream
from service.store.idempotency import StoredOutcome
from service.store.key_registry import CallerStanding

Stream: TypeAlias = list[Envelope] | UnfoldableStream
ENVIRONMENTS: tuple[Environment, ...] = get_args(Environment)


def _readable(*texts: str) -> bool:
    """Whether these texts can be sent as query parameters (else the lookup is skipped:
    the command then fails alone, when its own write is checked)."""
    try:
        check_storable(*texts)
    except UnstorableValue:
        return False
    return True


@dataclass(frozen=True, slots=True)
class BatchReads:
    """What a batch needs read, under the append lock, before it can be decided."""

    # Keys whose streams are loaded (every command's but a GenerateKey's).
    key_ids: list[str]
    # A GenerateKey's fresh key id: only whether it is taken already.
    new_key_ids: list[str]
    callers: list[str]
    counts: list[CountKey]
    outcomes: list[OutcomeKey]

    @staticmethod
    def of(requests: Sequence[CommandRequest]) -> BatchReads:
        """Every lookup ``record_command`` can make for these requests (a superset)."""
        key_ids: dict[str, None] = {}
        new_key_ids: dict[str, None] = {}
        callers: dict[str, None] = {}
        counts: dict[CountKey, None] = {}
        outcomes: dict[OutcomeKey, None] = {}
        for request in requests:
            command = request.command
            if _readable(command.key_id):
                fresh = isinstance(command, GenerateKey)
                (new_key_ids if fresh else key_ids)[command.key_id] = None
            if request.caller is not None and _readable(request.caller.key_id):
                callers[request.caller.key_id] = None
            if request.idempotent is not None and _readable(
                request.actor.id, request.idempotent.key
            ):
                outcomes[(request.actor.id, request.idempotent.key)] = None
            if request.org_id == SYSTEM_ORG or not _readable(request.org_id):
                continue
            if isinstance(command, GenerateKey):
                counts[(request.org_id, command.environment, command.issued_at)] = None
            elif isinstance(command, EnableKey):
                # The key's environment is in its stream, not read yet: count both.
                for environment in ENVIRONMENTS:
                    counts[(request.org_id, environment, command.issued_at)] = None
        return BatchReads(
            list(key_ids), list(new_key_ids), list(callers), list(counts), list(outcomes)
        )


@dataclass(frozen=True, slots=True)
class BatchSnapshot:
    """What ``BatchReads`` found, read under the append lock at one moment."""

    head: LogHead
    now: datetime
    callers: dict[str, CallerStanding] = field(default_factory=dict)
    streams: dict[str, Stream] = field(default_factory=dict)
    # New key ids that already have events (their streams are not loaded).
    taken: frozenset[str] = frozenset()
    counts: dict[CountKey, int] = field(default_factory=dict)
    outcomes: dict[OutcomeKey, StoredOutcome] = field(default_factory=dict)


@dataclass(slots=True)
class BatchPlan:
    """The batch decided: each command's outcome (or failure) and what to write."""

    outcomes: list[CommandOutcome | Exception] = field(default_factory=list)
    # The events to append, in position order, as sealed (``Committed``).
    committed: list[Committed] = field(default_factory=list)
    # The registry row of each key the batch changed, as of its last command.
    registry: dict[str, KeyState] = field(default_factory=dict)
    remembered: dict[OutcomeKey, StoredOutcome] = field(default_factory=dict)

    @property
    def events(self) -> list[Envelope]:
        """The envelopes to append."""
        return [item.envelope for item in self.committed]


def _holds_slot(state: KeyState | None, at: datetime) -> bool:
    return (
        state is not None
        and state.status == "active"
        and (state.expires_at is None or state.expires_at > at)
    )


class _Batch:
    """The snapshot plus what the batch's commands kept so far."""

    def __init__(self, snapshot: BatchSnapshot, plan: BatchPlan) -> None:
        self.snapshot = snapshot
        self.plan = plan
        self.head = LogHead(snapshot.head.position, snapshot.head.hash)
        self.callers = dict(snapshot.callers)
        self.streams: dict[str, Stream] = dict(snapshot.streams)
        # Each changed key's registry state before the batch (for counts), by (org, env).
        self.before: dict[str, KeyState | None] = {}
        self.changed: dict[tuple[str, str], set[str]] = {}

    def count_active(self, org_id: str, environment: Environment, at: datetime) -> int:
        base = self.snapshot.counts.get((org_id, environment, at))
        if base is None:
            if _readable(org_id):
                raise RuntimeError("an active-key count the batch did not read")
            base = 0  # an org that cannot be stored: the command fails at its write
        for key_id in self.changed.get((org_id, environment), ()):
            base += _holds_slot(self.plan.registry[key_id], at)
            base -= _holds_slot(self.before[key_id], at)
        return base

    def keep(self, scratch: _CommandScratch) -> None:
        """Make one command's writes part of the batch (it succeeded)."""
        for item in scratch.events:
            envelope = item.envelope
            stream = self.streams.get(envelope.key_id)
            # An unfoldable stream takes no append (``_CommandScratch.append`` refuses it).
            kept = stream if isinstance(stream, list) else []
            self.streams[envelope.key_id] = [*kept, envelope]
        if scratch.events:
            last = scratch.events[-1].envelope
            self.head = LogHead(last.position, last.hash)
            self.plan.committed.extend(scratch.events)
        for state in scratch.saved:
            if state.key_id not in self.plan.registry:
                self.before[state.key_id] = self._state_before(state.key_id)
            self.plan.registry[state.key_id] = state
            self.changed.setdefault((state.org_id, state.environment), set()).add(state.key_id)
            if state.key_id in self.callers:
                # A later command made with this service key sees what this one did to it.
                self.callers[state.key_id] = CallerStanding.of(state)
        self.plan.remembered.update(scratch.remembered)

    def _state_before(self, key_id: str) -> KeyState | None:
        stream = self.snapshot.streams.get(key_id)
        return fold_stream(stream) if isinstance(stream, list) else None


class _CommandScratch:
    """A ``CommandSession`` for one command: reads the batch, keeps its writes apart."""

    def __init__(self, batch: _Batch) -> None:
        self.batch = batch
        self.events: list[Committed] = []
        self.saved: list[KeyState] = []
        self.remembered: dict[OutcomeKey, StoredOutcome] = {}

    async def recorded_outcome(self, caller_id: str, idempotency_key: str) -> StoredOutcome | None:
        key = (caller_id, idempotency_key)
        return self.batch.plan.remembered.get(key) or self.batch.snapshot.outcomes.get(key)

    async def stream(self, key_id: str) -> list[Envelope]:
        stream = self.batch.streams.get(key_id)
        if isinstance(stream, UnfoldableStream):
            raise stream
        return list(stream or ())

    async def count_active(self, org_id: str, environment: Environment, now: datetime) -> int:
        return self.batch.count_active(org_id, environment, now)

    async def append(
        self, events: Sequence[DomainEvent], *, actor: Actor, expected_version: int
    ) -> list[Committed]:
        for event in events:
            stream = self.batch.streams.get(event.key_id)
            # The events table's unique (key_id, stream_version), checked before writing.
            taken = event.key_id in self.batch.snapshot.taken
            if (
                taken
                or isinstance(stream, UnfoldableStream)
                or len(stream or ()) > expected_version
            ):
                raise KeyledgerError("version_mismatch", "the key changed concurrently; retry")
        sealed = seal_committed_after(
            events,
            actor=actor,
            expected_version=expected_version,
            position=self.batch.head.position,
            previous_hash=self.batch.head.hash,
        )
        for item in sealed:
            envelope = item.envelope
            # Sealing hashed the whole envelope as UTF-8: no lone surrogate is left in it.
            # The json columns take an escaped NUL; the text columns refuse a NUL.
            check_storable(envelope.org_id, envelope.key_id, envelope.event_type)
        self.events.extend(sealed)
        return sealed

    async def save(self, state: KeyState) -> None:
        check_storable(state.key_id, state.org_id, state.environment, state.secret_hash or "")
        self.saved.append(state)

    async def remember(self, caller_id: str, idempotency_key: str, outcome: StoredOutcome) -> None:
        check_storable(caller_id, idempotency_key, outcome.key)
        self.remembered[(caller_id, idempotency_key)] = outcome


async def plan_batch(
    requests: Sequence[CommandRequest], snapshot: BatchSnapshot, *, max_active_keys: int
) -> BatchPlan:
    """Decide ``requests`` in order against ``snapshot``; no I/O.

    A command that raises (a refusal, an unstorable value, a bug) is that
    command's outcome and leaves nothing in the plan; the others go on.
    """
    plan = BatchPlan()
    batch = _Batch(snapshot, plan)
    for request in requests:
        scratch = _CommandScratch(batch)
        try:
            if request.caller is not None:
                check_caller(batch.callers.get(request.caller.key_id), request.caller, snapshot.now)
            outcome = await record_command(scratch, request, max_active_keys=max_active_keys)
        except Exception as exc:  # whatever one command raises is its own outcome
            plan.outcomes.append(exc)
            continue
        batch.keep(scratch)
        plan.outcomes.append(outcome)
    return plan


__all__ = ["BatchPlan", "BatchReads", "BatchSnapshot", "CountKey", "OutcomeKey", "plan_batch"]
