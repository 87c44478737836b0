"""Rows of the ``events`` table as Python values, and rows that will not be.

A row written by ``EventStore.append`` always decodes. A row written any
other way (a hand-made INSERT, an old bug, a damaged log) may not: its
``actor``/``data`` may not be JSON objects, it may name an unknown event type,
hold NUL or a lone surrogate, or a timestamp the driver cannot read. Readers
get such a row as an ``UnreadableEvent`` in its place (docs/security.md §5) and show or
skip it; a key whose stream holds one cannot be folded (``UnfoldableStream``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol, TypeVar
from uuid import uuid4

import asyncpg

from events.codec import (
    EncodedEnvelope,
    actor_json,
    canonical_json,
    decode_event,
    seal_encoded,
    to_domain_event,
)
from events.models import Actor, DomainEvent, Envelope, LogEvent
from service.domain.vocabulary import is_unicode
from service.errors import KeyledgerError
from service.redaction import redact_text
from service.store.quarantine import is_transient, storable

# Every column of an event, in the order ``row_of`` writes and ``envelope_from_row`` reads.
EVENT_COLUMNS = (
    "position, event_id, event_type, schema_version, org_id, key_id, stream_version,"
    " occurred_at, actor, data, hash"
)
# The columns ``read_events_after`` reads, in the order ``_logged_event`` unpacks them.
EVENT_ONLY_COLUMNS = "position, event_type, schema_version, key_id, org_id, occurred_at, data"
_raw_decode = json.JSONDecoder().raw_decode
_validate_envelope: Callable[[dict[str, Any]], Envelope] = (
    Envelope.__pydantic_validator__.validate_python
)


def json_value(text: str) -> Any:
    """``json.loads`` for a ``json`` column, minus its whitespace checks around
    the document (a measurable share of folding a long log). ``append`` writes
    canonical JSON, which has none; PostgreSQL refuses anything after it."""
    try:
        return _raw_decode(text)[0]
    except ValueError:
        return json.loads(text)  # leading whitespace (a row not written by us)


class LoggedEvent(NamedTuple):
    """A domain event and its position in the log: what projections fold."""

    position: int
    event: LogEvent


class UnreadableEvent(NamedTuple):
    """A row of the log that does not decode: who it is about, and the error.

    Consumers quarantine its key (``service.store.quarantine``) rather than halt;
    readers show it as a placeholder (never its data).
    """

    position: int
    key_id: str
    org_id: str
    event_type: str
    error: Exception
    stream_version: int | None = None


class UnfoldableStream(Exception):
    """A key's stream holds an event that cannot be read or applied (docs/security.md §5).

    Its key cannot be folded, so no command can be decided on it: the API
    answers 409 ``key_quarantined`` (see ``refusal``) and writes nothing.
    """

    def __init__(self, key_id: str, org_id: str, position: int, event_type: str) -> None:
        super().__init__(f"the stream of {key_id!r} does not fold at position {position}")
        self.key_id = key_id
        self.org_id = org_id
        self.position = position
        self.event_type = event_type

    def refusal(self, org_id: str) -> KeyledgerError:
        """The answer to a caller of ``org_id``: another org's key does not exist for it."""
        if self.org_id != org_id:
            return KeyledgerError("key_not_found", "no such key")
        return KeyledgerError(
            "key_quarantined",
            "this key's events cannot be read; it has been set aside and takes no commands",
            {"position": self.position, "event_type": storable_name(self.event_type)},
        )


_State = TypeVar("_State")


def fold_own_stream(
    envelopes: Sequence[Envelope],
    apply: Callable[[_State | None, LogEvent], _State],
    state: _State | None = None,
) -> _State | None:
    """A stream that is not a key's (an identity's, a webhook endpoint's) folded from
    ``state`` by ``apply``; ``UnfoldableStream`` at the first event that does not decode
    or apply (a transient database error passes through)."""
    for envelope in envelopes:
        try:
            state = apply(state, to_domain_event(envelope))
        except Exception as exc:
            if is_transient(exc):
                raise
            raise UnfoldableStream(
                envelope.key_id, envelope.org_id, envelope.position, envelope.event_type
            ) from None
    return state


def storable_name(text: str) -> str:
    """An identifier read from a row, safe to show: escaped control characters, no secret."""
    return redact_text(storable(text))


def _instant(value: Any) -> Any:
    """``value`` unless it is a timestamp that is no instant.

    PostgreSQL's ``infinity`` and ``-infinity`` come back from asyncpg as
    naive ``datetime.max`` / ``datetime.min``: no event happened then, so the
    row is unreadable (its key is set aside), not a state that breaks every
    reader that formats it later.
    """
    if isinstance(value, datetime) and value.tzinfo is None:
        raise ValueError("occurred_at is not an instant (infinity)")
    return value


def logged_event(row: asyncpg.Record) -> LoggedEvent:
    position, event_type, schema_version, key_id, org_id, occurred_at, data = row
    return LoggedEvent(
        position,
        decode_event(
            event_type,
            schema_version,
            key_id=key_id,
            org_id=org_id,
            occurred_at=_instant(occurred_at),
            data=json_value(data),
        ),
    )


def stored_body(row: asyncpg.Record) -> dict[str, Any]:
    """An ``events`` row's envelope fields but the hash, as stored (no model in between)."""
    return {
        "event_id": row["event_id"],
        "event_type": row["event_type"],
        "schema_version": row["schema_version"],
        "org_id": row["org_id"],
        "key_id": row["key_id"],
        "stream_version": row["stream_version"],
        "position": row["position"],
        "occurred_at": _instant(row["occurred_at"]),
        "actor": json_value(row["actor"]),
        "data": json_value(row["data"]),
    }


def envelope_from_row(row: asyncpg.Record) -> Envelope:
    """An ``events`` row as an envelope."""
    # One validation of the whole envelope (actor included) rather than the
    # actor on its own and then the envelope: a third less time per row.
    body = stored_body(row)
    body["hash"] = row["hash"]
    return _validate_envelope(body)


def readable_envelope(row: asyncpg.Record) -> Envelope:
    """An ``events`` row as an envelope that any reader can be shown.

    Stricter than ``envelope_from_row``: the event must also decode with
    ``events.decode`` (a known type, valid data) and its text must be Unicode
    (a lone surrogate cannot be encoded as UTF-8, and strict JSON parsers
    refuse its ``\\ud800`` escape). NUL is shown (JSON writes it ``\\u0000``),
    but no command may build on it: see ``storable_stream``. Readers that show
    or fold the log (audit, a key's events and view, commands) use this; a row
    it refuses is shown as unreadable.
    """
    envelope = envelope_from_row(row)
    to_domain_event(envelope)
    if not _clean(envelope.actor.model_dump(), nul=True) or not _clean(envelope.data, nul=True):
        raise ValueError("the event holds text that is not Unicode (a lone surrogate)")
    return envelope


def storable_stream(envelopes: Sequence[Envelope]) -> None:
    """``UnfoldableStream`` unless every event of a key holds text PostgreSQL can store.

    A command writes the key's whole state to the registry: on a name with
    NUL in it that write would fail, so the key takes no command at all.
    """
    for envelope in envelopes:
        if not _clean(envelope.data, nul=False):
            raise UnfoldableStream(
                envelope.key_id, envelope.org_id, envelope.position, envelope.event_type
            )


class UnstorableValue(ValueError):
    """A value PostgreSQL would refuse (NUL in ``text``/``jsonb``, a lone surrogate).

    Found before anything is sent, so one command's bad value fails that
    command alone instead of a statement that writes a whole batch.
    """


def check_storable(*values: Any) -> None:
    """``UnstorableValue`` unless every text inside ``values`` can be stored in a ``text``
    or ``jsonb`` column: strings, and the strings nested in dicts, lists and tuples, must
    encode as UTF-8 and hold no NUL (a ``json`` column's canonical text escapes NUL)."""
    for value in values:
        if not _clean(value, nul=False):
            # The type of problem only: the value may be a secret or hostile text.
            raise UnstorableValue("a value holds NUL or text that is not Unicode")


def _clean(value: Any, *, nul: bool) -> bool:
    if isinstance(value, str):
        return (nul or "\x00" not in value) and is_unicode(value)
    if isinstance(value, dict):
        return all(_clean(k, nul=nul) and _clean(v, nul=nul) for k, v in value.items())
    if isinstance(value, list | tuple):
        return all(_clean(v, nul=nul) for v in value)
    return True


class Positioned(Protocol):
    """Anything read from the log at a position (an envelope, a logged or unreadable event)."""

    @property
    def position(self) -> int: ...


def missing_position(after: int, rows: Sequence[Positioned]) -> int | None:
    """The first position the log lacks in ``rows`` read after ``after``; None when dense.

    Appends are dense under the append lock, so in rows read from PostgreSQL
    in position order a missing position is a hole in the log itself (a row
    written around the lock), not one still to commit.
    """
    expected = after + 1
    for row in rows:
        if row.position != expected:
            return expected
        expected += 1
    return None


def seal_after(
    events: Sequence[DomainEvent],
    *,
    actor: Actor,
    expected_version: int,
    position: int,
    previous_hash: str,
) -> list[Envelope]:
    """``events`` of one key as envelopes continuing the log after ``position``.

    Positions, stream versions (after ``expected_version``) and the hash chain
    (from ``previous_hash``) are assigned here, the same for every store.
    """
    return [
        envelope
        for envelope, _ in _sealed(
            events,
            actor=actor,
            expected_version=expected_version,
            position=position,
            previous_hash=previous_hash,
        )
    ]


def _sealed(
    events: Sequence[DomainEvent],
    *,
    actor: Actor,
    expected_version: int,
    position: int,
    previous_hash: str,
) -> Iterator[tuple[Envelope, EncodedEnvelope]]:
    """Each of ``events`` sealed after ``position`` (``seal_after``), with its encodings."""
    for version, event in enumerate(events, start=expected_version + 1):
        position += 1
        envelope, encoded = seal_encoded(
            event,
            event_id=uuid4(),
            stream_version=version,
            position=position,
            actor=actor,
            previous_hash=previous_hash,
        )
        previous_hash = envelope.hash
        yield envelope, encoded


class Committed(NamedTuple):
    """An event this replica appended, with what its writer already made of it.

    The group commit seals, decodes (to fold the key's state) and encodes (to
    store it) every event it appends; its followers in this process (the
    verification index, the projections, the outbox relay) take the decoded
    event and the NATS payload from here rather than derive them from the
    envelope again. Where only the envelope is known (events appended outside
    the batch, or the in-memory store) they are None, and readers derive them
    as they do for the log's rows.
    """

    envelope: Envelope
    # ``to_domain_event(envelope)``.
    event: LogEvent | None = None
    encoded: EncodedEnvelope | None = None

    @property
    def position(self) -> int:
        """The envelope's position in the log."""
        return self.envelope.position

    def decoded(self) -> LogEvent:
        """The domain event (decoded here when the writer did not)."""
        return self.event if self.event is not None else to_domain_event(self.envelope)


def seal_committed_after(
    events: Sequence[DomainEvent],
    *,
    actor: Actor,
    expected_version: int,
    position: int,
    previous_hash: str,
) -> list[Committed]:
    """``seal_after``, each envelope with its decoded event and its encodings."""
    # Decoded from the envelope, as a reader of the log would: the state the writer
    # folds is the state the log gives.
    return [
        Committed(envelope, to_domain_event(envelope), encoded)
        for envelope, encoded in _sealed(
            events,
            actor=actor,
            expected_version=expected_version,
            position=position,
            previous_hash=previous_hash,
        )
    ]


def row_of(envelope: Envelope, encoded: EncodedEnvelope | None = None) -> tuple[Any, ...]:
    """An envelope as an ``events`` row, in ``EVENT_COLUMNS`` order (for INSERT or COPY);
    its ``encoded`` texts when sealing made them."""
    if encoded is not None:
        actor, data = encoded.actor_json, encoded.data_json
    else:
        actor, data = canonical_json(actor_json(envelope.actor)), canonical_json(envelope.data)
    return (
        envelope.position,
        envelope.event_id,
        envelope.event_type,
        envelope.schema_version,
        envelope.org_id,
        envelope.key_id,
        envelope.stream_version,
        envelope.occurred_at,
        actor,
        data,
        envelope.hash,
    )
