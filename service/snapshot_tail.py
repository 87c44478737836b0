"""The log after a registry snapshot, as the snapshot writer holds it until it is folded.

Each event is kept as read from the ``events`` table: a tuple of plain values
(ints, text, an instant), which CPython's cyclic collector stops tracking
after its first look. Up to ``EVENTS_PER_SNAPSHOT`` of them are held while a
snapshot is made in a serving replica; decoded (envelopes, event models,
their dicts) they would be a few million tracked objects, each full
collection walking them all while requests wait. They are decoded, as the
index decodes them, when their key is folded.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from events.codec import to_domain_event
from events.models import LogEvent, is_identity_stream, is_webhook_stream
from service.domain.decider import evolve
from service.domain.state import KeyState
from service.store.event_rows import EVENT_COLUMNS, envelope_from_row
from service.store.event_store import UnreadableEvent
from service.store.quarantine import INDEX_CONSUMER, QuarantinedKey, describe_failure
from service.store.registry_snapshot import SetAside
from service.store.snapshot_rows import state_row

# An ``events`` row as read: its ``EVENT_COLUMNS`` values, in that order.
ReadEvent = tuple[Any, ...]
_NAMES = tuple(name.strip() for name in EVENT_COLUMNS.split(","))
# What the writer selects: ``EVENT_COLUMNS``, the event id as text (the driver's UUID
# objects are tracked, and would keep each row's tuple tracked with them).
READ_COLUMNS = ", ".join("event_id::text" if name == "event_id" else name for name in _NAMES)
_POSITION, _EVENT_TYPE, _ORG_ID, _KEY_ID = (
    _NAMES.index(name) for name in ("position", "event_type", "org_id", "key_id")
)
# One event of a key after the snapshot: (position, org_id, event_type, the row as read
# or why it could not be read). A plain tuple, like the row, so that it is not tracked.
Step = tuple[int, str, str, ReadEvent | Exception]


class Positioned:
    """A read row's position, for ``missing_position``."""

    __slots__ = ("position",)

    def __init__(self, position: int) -> None:
        self.position = position


def positioned(row: ReadEvent | UnreadableEvent) -> Positioned:
    """``row``'s position, whichever way it was read."""
    return Positioned(row.position if isinstance(row, UnreadableEvent) else row[_POSITION])


def decoded(read: ReadEvent | Exception) -> LogEvent:
    """The event of a step, as the index decodes it (raises what decoding raises)."""
    if isinstance(read, Exception):
        raise read
    return to_domain_event(envelope_from_row(dict(zip(_NAMES, read, strict=True))))


def fold_steps(key_id: str, state: KeyState | None, steps: Sequence[Step]) -> KeyState | SetAside:
    """The key's state after ``steps`` (its ``position`` the last one's), or, at the
    first step that fails, its quarantine and the state before it."""
    for position, org_id, event_type, read in steps:
        try:
            state = evolve(state, decoded(read)).with_changes(position=position)
            continue
        except Exception as exc:  # does not decode, or whatever a poison event makes evolve raise
            failure = exc
        entry = QuarantinedKey(
            INDEX_CONSUMER, key_id, org_id, position, event_type, describe_failure(failure)
        )
        return SetAside(entry, state_row(state) if state is not None else None)
    assert state is not None  # steps is never empty
    return state


# A key's steps, newest first: (step, the chain of the steps before it, or None).
Chain = tuple[Step, "Chain | None"]


class StepsByKey:
    """Each key's steps, in position order.

    Kept per key as a chain of exact tuples of untracked values, which the
    collector stops tracking too: a list per key would stay tracked, and a
    hundred thousand of them make each full collection tens of milliseconds
    longer while requests wait."""

    def __init__(self) -> None:
        self._chains: dict[str, Chain] = {}

    def __len__(self) -> int:
        return len(self._chains)

    def append(self, key_id: str, step: Step) -> None:
        """Add ``step``, after the key's earlier steps."""
        self._chains[key_id] = (step, self._chains.get(key_id))

    def pop(self, key_id: str) -> list[Step] | None:
        """The key's steps, taken out (None: it has none)."""
        chain = self._chains.pop(key_id, None)
        return None if chain is None else _in_order(chain)

    def isdisjoint(self, key_ids: list[str]) -> bool:
        """Whether none of ``key_ids`` has steps here."""
        return self._chains.keys().isdisjoint(key_ids)

    def drain(self) -> Iterator[tuple[str, list[Step]]]:
        """Every key with its steps, each taken out as it is handed over: the rows are
        freed as the caller goes, not all at once at the end (a long pause too)."""
        while self._chains:
            key_id, chain = self._chains.popitem()
            yield key_id, _in_order(chain)


def _in_order(chain: Chain | None) -> list[Step]:
    steps = []
    while chain is not None:
        step, chain = chain
        steps.append(step)
    steps.reverse()
    return steps


class Tail:
    """The log after a snapshot, grouped by key, in position order."""

    def __init__(self, position: int, skip: set[str]) -> None:
        self.skip = skip
        self.by_key = StepsByKey()
        self.position = position

    def add(self, row: ReadEvent | UnreadableEvent) -> None:
        """Take the next row of the log (``READ_COLUMNS`` as read, or unreadable)."""
        if isinstance(row, UnreadableEvent):
            key_id = row.key_id
            step: Step = (row.position, row.org_id, row.event_type, row.error)
        else:
            key_id = row[_KEY_ID]
            step = (row[_POSITION], row[_ORG_ID], row[_EVENT_TYPE], row)
        self.position = step[0]
        if key_id in self.skip or is_identity_stream(key_id):
            # Identities are not keys: a cold start reads them from the log itself
            # (``service.store.identity_log``), as of the snapshot's position.
            return
        if is_webhook_stream(key_id):
            return  # a webhook endpoint's: the index keeps nothing of it
        self.by_key.append(key_id, step)
