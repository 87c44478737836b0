"""The write side's stores held in memory: for tests and experiments, never for keys in use.

``InMemoryEventLog`` keeps the ``EventLog`` contract (``service.store.event_log``)
as PostgreSQL does, checked by the same contract tests: events are sealed
with ``events.codec.seal`` onto one hash chain with dense positions, and an
append whose stream versions are already taken is refused with
``version_mismatch`` (the unique (key_id, stream_version) constraint of the
``events`` table) and writes nothing. ``InMemoryKeyRegistry`` and
``InMemoryIdempotency`` answer the questions their PostgreSQL counterparts
answer (``key_registry``, ``idempotency``), by the same rules.

Nothing survives the process, and nothing is shared between processes: no
listener is notified, no relay publishes. Each object is safe to use from one
event loop; callers that need appends serialized with reads (a command reads
a stream, decides, then appends) hold their own lock, as
``service.in_memory_commands`` does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from events.codec import GENESIS_HASH
from events.models import Actor, DomainEvent, Envelope
from events.vocabulary import Environment
from service.clock import utc_now
from service.domain.orgs import SYSTEM_ORG
from service.domain.state import KeyState
from service.errors import KeyledgerError
from service.store.event_rows import seal_after
from service.store.idempotency import StoredAnswer, StoredOutcome
from service.store.key_registry import CallerStanding


class InMemoryEventLog:
    """An append-only list of envelopes, hash-chained as the ``events`` table is."""

    def __init__(self) -> None:
        self._log: list[Envelope] = []
        # Positions of each key's events, in stream order.
        self._streams: dict[str, list[int]] = {}

    async def append(
        self, events: Sequence[DomainEvent], *, actor: Actor, expected_version: int
    ) -> list[Envelope]:
        """Seal ``events`` after the log's head, stream versions after ``expected_version``."""
        taken = {
            (envelope.key_id, envelope.stream_version)
            for key_id in {event.key_id for event in events}
            for envelope in self._stream(key_id)
        }
        for version, event in enumerate(events, start=expected_version + 1):
            if (event.key_id, version) in taken:
                raise KeyledgerError("version_mismatch", "the key changed concurrently; retry")
        sealed = seal_after(
            events,
            actor=actor,
            expected_version=expected_version,
            position=len(self._log),
            previous_hash=self._log[-1].hash if self._log else GENESIS_HASH,
        )
        # All or nothing, as one transaction: nothing is written before every event sealed.
        for envelope in sealed:
            self._log.append(envelope)
            self._streams.setdefault(envelope.key_id, []).append(envelope.position)
        return sealed

    async def load_stream(self, key_id: str) -> list[Envelope]:
        """Every event of one key, in stream order."""
        return sorted(self._stream(key_id), key=lambda envelope: envelope.stream_version)

    async def read_after(self, position: int, limit: int = 1000) -> list[Envelope]:
        """Up to ``limit`` events after ``position``, in position order."""
        return self._log[max(position, 0) : max(position, 0) + max(limit, 0)]

    async def head(self) -> int:
        """The position of the last event (0 for an empty log)."""
        return len(self._log)

    def _stream(self, key_id: str) -> list[Envelope]:
        return [self._log[position - 1] for position in self._streams.get(key_id, [])]


class InMemoryKeyRegistry:
    """Each key's current state, for active-key counts and service-key standing."""

    def __init__(self) -> None:
        self._keys: dict[str, KeyState] = {}

    async def save(self, state: KeyState) -> None:
        """Record ``state`` as the key's current entry."""
        self._keys[state.key_id] = state

    async def states(self, key_ids: Sequence[str]) -> list[KeyState]:
        """The entries of these keys, in the order given (absent ones left out)."""
        return [self._keys[key_id] for key_id in key_ids if key_id in self._keys]

    async def standings(self, key_ids: Sequence[str]) -> dict[str, CallerStanding]:
        """The standing of each of these service keys (absent: not a service key)."""
        return {
            key_id: CallerStanding.of(state)
            for key_id in key_ids
            if (state := self._keys.get(key_id)) is not None and state.org_id == SYSTEM_ORG
        }

    async def count_active(self, org_id: str, environment: Environment, now: datetime) -> int:
        """Keys that hold an active slot: active and not past ``expires_at``."""
        return sum(
            1
            for state in self._keys.values()
            if state.org_id == org_id
            and state.environment == environment
            and state.status == "active"
            and (state.expires_at is None or state.expires_at > now)
        )

    async def find_by_secret_hash(self, secret_hash: str, now: datetime) -> str | None:
        """The key whose current, or still-in-grace previous, secret has this hash."""
        for state in self._keys.values():
            if state.secret_hash == secret_hash:
                return state.key_id
        for state in self._keys.values():
            in_grace = state.previous_valid_until is not None and state.previous_valid_until > now
            if state.previous_secret_hash == secret_hash and in_grace:
                return state.key_id
        return None

    async def due_for_expiry(self, now: datetime) -> list[tuple[str, str]]:
        """(key_id, org_id) of keys past ``expires_at`` whose ``KeyExpired`` is not recorded."""
        due = [
            state
            for state in self._keys.values()
            if state.status in ("active", "disabled")
            and state.expires_at is not None
            and state.expires_at <= now
        ]
        due.sort(key=lambda state: state.expires_at or now)
        return [(state.key_id, state.org_id) for state in due[:500]]


@dataclass(frozen=True, slots=True)
class _Remembered:
    answer: StoredAnswer
    at: datetime


class InMemoryIdempotency:
    """Per-caller memory of command answers, ``ttl_hours`` long by ``clock``."""

    def __init__(self, ttl_hours: int, clock: Callable[[], datetime] = utc_now) -> None:
        self.ttl_hours = ttl_hours
        self.clock = clock
        self._answers: dict[tuple[str, str], _Remembered] = {}

    async def find(self, caller_key_id: str, idempotency_key: str) -> StoredOutcome | None:
        """A key command's outcome remembered under this key, unless older than the TTL."""
        answer = await self.find_answer(caller_key_id, idempotency_key)
        return None if answer is None else StoredOutcome.of(answer)

    async def remember(
        self, caller_key_id: str, idempotency_key: str, outcome: StoredOutcome
    ) -> None:
        """Keep a key command's outcome; an expired one under the same key is replaced."""
        await self.remember_answer(caller_key_id, idempotency_key, outcome.answer())

    async def find_answer(self, caller_key_id: str, idempotency_key: str) -> StoredAnswer | None:
        """The answer remembered under this key, unless older than the TTL."""
        remembered = self._answers.get((caller_key_id, idempotency_key))
        if remembered is None or remembered.at <= self.clock() - timedelta(hours=self.ttl_hours):
            return None
        return remembered.answer

    async def remember_answer(
        self, caller_key_id: str, idempotency_key: str, answer: StoredAnswer
    ) -> None:
        """Keep ``answer``; an expired one under the same key is replaced."""
        self._answers[(caller_key_id, idempotency_key)] = _Remembered(answer, self.clock())


__all__ = ["InMemoryEventLog", "InMemoryIdempotency", "InMemoryKeyRegistry"]
