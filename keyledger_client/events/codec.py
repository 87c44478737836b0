"""Serialization of events: canonical JSON, the hash chain, typed decoding.

The canonical form is what the hash chain signs, so it must be byte-for-byte
reproducible by any reader: sorted keys, no whitespace, UTF-8, timestamps in
one fixed format.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, NamedTuple
from uuid import UUID

from keyledger_client.events.models import EVENT_TYPES, Actor, DomainEvent, Envelope, LogEvent

try:  # optional: the service installs it; the client alone works without (same bytes)
    import msgspec

    _fast_encode: Callable[[Any], bytes] | None = msgspec.json.Encoder(order="sorted").encode
except ImportError:  # pragma: no cover - the service's environment has it
    _fast_encode = None

GENESIS_HASH = "0" * 64

Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
# (event_type, from_schema_version) -> function turning that data into the next version.
_UPCASTERS: dict[tuple[str, int], Upcaster] = {}


class UnknownEventType(ValueError):
    """An envelope names an event type this version of keyledger does not know."""


def format_timestamp(moment: datetime) -> str:
    """UTC ISO-8601 with microseconds and a ``Z``: the one format in canonical JSON."""
    if moment.tzinfo is None:
        raise ValueError("timestamps must be timezone-aware")
    utc = moment.astimezone(UTC)
    if utc.year >= 1000:
        # The same text as the strftime below (which pads no year), at a fraction of the cost.
        return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def canonical_json(value: Any) -> str:
    """Sorted keys, no whitespace, non-ASCII kept as UTF-8."""
    fast = _fast_canonical(value)
    if fast is not None:
        return fast.decode()
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def canonical_bytes(value: Any) -> bytes:
    """``canonical_json(value)`` encoded as UTF-8 (what the hash chain signs)."""
    fast = _fast_canonical(value)
    if fast is not None:
        return fast
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def _fast_canonical(value: Any) -> bytes | None:
    """The canonical bytes by msgspec, or None where only ``json`` gives them.

    The hash chain signs these bytes, so they must never change: msgspec writes
    exactly what ``json.dumps(sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` does for strings (keys sorted by code point), ints,
    booleans, null, objects and arrays, several times faster (a measurable
    share of every command). Anything else (floats, which it formats
    differently, other types, lone surrogates) goes the ``json`` way.
    """
    if _fast_encode is None or not _plain(value):
        return None
    try:
        return _fast_encode(value)
    except UnicodeError:  # a lone surrogate
        return None


def _plain(value: Any) -> bool:
    """Whether ``value`` holds nothing but str-keyed dicts, lists, tuples, str, int, bool
    and None (exact types: a subclass may encode differently)."""
    # A loop over a stack rather than recursion through generators: this runs on
    # every event, and the generators cost more than the encoding they guard.
    todo = [value]
    while todo:
        item = todo.pop()
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is dict:
            for key in item:
                if type(key) is not str:
                    return False
            todo.extend(item.values())
        elif kind is list or kind is tuple:
            todo.extend(item)
        else:
            return False
    return True


def actor_json(actor: Actor) -> dict[str, Any]:
    """``actor.model_dump(mode="json")``, made directly: its fields are text or null (JSON
    already), and this runs for every event sealed, stored and published."""
    return {"id": actor.id, "on_behalf_of": actor.on_behalf_of, "request_id": actor.request_id}


def envelope_body(envelope: Envelope) -> dict[str, Any]:
    """The envelope as a JSON object, without ``hash``."""
    return {
        "event_id": str(envelope.event_id),
        "event_type": envelope.event_type,
        "schema_version": envelope.schema_version,
        "org_id": envelope.org_id,
        "key_id": envelope.key_id,
        "stream_version": envelope.stream_version,
        "position": envelope.position,
        "occurred_at": format_timestamp(envelope.occurred_at),
        "actor": actor_json(envelope.actor),
        "data": envelope.data,
    }


def chain_hash(previous_hash: str, body: dict[str, Any]) -> str:
    """SHA-256 over the previous hash followed by this event's canonical JSON."""
    return hashlib.sha256(previous_hash.encode() + canonical_bytes(body)).hexdigest()


class EncodedEnvelope(NamedTuple):
    """An envelope's canonical encodings, made once while sealing it (``seal_encoded``)."""

    # ``envelope_to_bytes(envelope)``: the NATS message's payload.
    payload: bytes
    # ``canonical_json`` of its ``actor`` (as ``actor_json``) and of its ``data``.
    actor_json: str
    data_json: str


def seal(
    event: DomainEvent,
    *,
    event_id: UUID,
    stream_version: int,
    position: int,
    actor: Actor,
    previous_hash: str,
) -> Envelope:
    """Wrap a domain event into its envelope and link it into the hash chain."""
    envelope, _ = seal_encoded(
        event,
        event_id=event_id,
        stream_version=stream_version,
        position=position,
        actor=actor,
        previous_hash=previous_hash,
    )
    return envelope


def seal_encoded(
    event: DomainEvent,
    *,
    event_id: UUID,
    stream_version: int,
    position: int,
    actor: Actor,
    previous_hash: str,
) -> tuple[Envelope, EncodedEnvelope]:
    """``seal``, and the canonical encodings its hash was computed from.

    The canonical JSON of an object is ``{`` + its members, sorted by key and
    joined by ``,`` + ``}``: so the body the hash signs is assembled from the
    encoded actor, data and the remaining fields, each encoded once, and the
    published envelope is the same bytes with ``"hash"`` in its sorted place
    (between ``event_type`` and ``key_id``). The writer stores and publishes
    these rather than encoding the event three more times.
    """
    data = event.data()
    actor_bytes = canonical_bytes(actor_json(actor))
    data_bytes = canonical_bytes(data)
    # Members before "hash" in key order: actor, data, event_id, event_type.
    head = b"".join(
        (
            b'{"actor":',
            actor_bytes,
            b',"data":',
            data_bytes,
            b',"event_id":"',
            str(event_id).encode(),  # hex digits and dashes: nothing to escape
            b'","event_type":',
            canonical_bytes(event.event_type),
        )
    )
    # Members after it: key_id, occurred_at, org_id, position, schema_version,
    # stream_version (a dict of their own, whose "{" is dropped).
    tail = canonical_bytes(
        {
            "key_id": event.key_id,
            "occurred_at": format_timestamp(event.occurred_at),
            "org_id": event.org_id,
            "position": position,
            "schema_version": event.schema_version,
            "stream_version": stream_version,
        }
    )[1:]
    digest = hashlib.sha256(previous_hash.encode() + head + b"," + tail).hexdigest()
    envelope = Envelope(
        event_id=event_id,
        event_type=event.event_type,
        schema_version=event.schema_version,
        org_id=event.org_id,
        key_id=event.key_id,
        stream_version=stream_version,
        position=position,
        occurred_at=event.occurred_at,
        actor=actor,
        data=data,
        hash=digest,
    )
    payload = b"".join((head, b',"hash":"', digest.encode(), b'",', tail))
    return envelope, EncodedEnvelope(payload, actor_bytes.decode(), data_bytes.decode())


def envelope_to_json(envelope: Envelope) -> str:
    """The envelope as one line of JSON, hash included (what NATS carries)."""
    return envelope_to_bytes(envelope).decode()


def envelope_to_bytes(envelope: Envelope) -> bytes:
    """``envelope_to_json`` encoded as UTF-8 (a NATS message's payload)."""
    return canonical_bytes({**envelope_body(envelope), "hash": envelope.hash})


def envelope_from_json(raw: str | bytes) -> Envelope:
    """Parse an envelope; unknown fields are ignored."""
    return Envelope.model_validate_json(raw)


def register_upcaster(event_type: str, from_version: int, upcaster: Upcaster) -> None:
    """Teach the decoder to lift ``event_type`` data from ``from_version`` to the next."""
    _UPCASTERS[(event_type, from_version)] = upcaster


def to_domain_event(envelope: Envelope) -> LogEvent:
    """The typed domain event inside an envelope, upcast to the current schema."""
    return decode_event(
        envelope.event_type,
        envelope.schema_version,
        key_id=envelope.key_id,
        org_id=envelope.org_id,
        occurred_at=envelope.occurred_at,
        data=dict(envelope.data),
    )


def decode_event(
    event_type: str,
    schema_version: int,
    *,
    key_id: str,
    org_id: str,
    occurred_at: datetime,
    data: dict[str, Any],
) -> LogEvent:
    """The typed domain event made of an envelope's parts, upcast to the current schema.

    ``data`` is taken over (keys are added to it): pass a dict of your own.
    This lets a reader of the log build events without building envelopes.
    """
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise UnknownEventType(event_type)
    version = schema_version
    while version < cls.schema_version:
        data = _UPCASTERS[(event_type, version)](data)
        version += 1
    data["key_id"] = key_id
    data["org_id"] = org_id
    data["occurred_at"] = occurred_at
    # The validator itself rather than ``model_validate``: same checks, without
    # the Python wrapper, which is a measurable share of folding a long log.
    event: LogEvent = cls.__pydantic_validator__.validate_python(data)
    return event


def decode(raw: str | bytes | Any) -> tuple[Envelope, LogEvent]:
    """Decode a NATS message (or its raw bytes) into its envelope and typed event."""
    payload = getattr(raw, "data", raw)
    envelope = envelope_from_json(payload)
    return envelope, to_domain_event(envelope)
