"""The NATS message of an event, publishing a batch of them, and whose fault a failed
publish is (docs/security.md §5).

The relay must tell two failures apart. One belongs to the event: its org id
is not a subject token (``nl\\n``, ``a.b``, ``*``), its envelope does not
encode, it is larger than NATS takes. Retrying it can never succeed, so the
relay quarantines the key and publishes the events after it (a revocation
behind a poison event must still reach every subscriber). The other is NATS
itself being away (timeouts, no responders, a closed connection): those are
retried forever and never quarantined, so an outage loses nothing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from nats import errors as nats_errors
from nats.js import errors as js_errors

from events.codec import envelope_to_bytes
from events.models import Envelope
from events.subjects import event_subject, is_subject_token
from service.outbox.acks import EXPECTED_STREAM_HEADER, AckedPublisher
from service.store.event_rows import Committed, UnreadableEvent
from service.store.quarantine import QuarantinedKey, set_aside

MSG_ID_HEADER = "Nats-Msg-Id"
# JetStream: "message size exceeds maximum allowed" (the stream's max_msg_size).
_MESSAGE_TOO_LARGE = 10054
# Client-side refusals of one message: never caused by NATS being down.
_EVENT_FAULTS = (
    nats_errors.BadSubjectError,
    nats_errors.BadHeaderError,
    nats_errors.MaxPayloadError,
)


class Unpublishable(ValueError):
    """The event cannot become a NATS message (a part of its subject is not a token)."""


def subject_token(value: str, part: str) -> str:
    """``value`` if it is one whole NATS subject token; else ``Unpublishable``.

    A dot would add tokens (subscribers filtering ``prefix.*.*.KeyRevoked``
    would silently miss the event), a wildcard would publish to a pattern,
    whitespace is refused by NATS (``BadSubjectError``). The rule is the one
    ``events.subjects`` applies: printable ASCII without ``.``, ``*`` or ``>``."""
    if not is_subject_token(value):
        raise Unpublishable(f"its {part} is not a NATS subject token")
    return value


def message_of(
    envelope: Envelope, prefix: str, payload: bytes | None = None
) -> tuple[str, bytes, dict[str, str]]:
    """(subject, payload, headers) of an event; raises when the event cannot be published.

    ``payload`` is the envelope's encoding when its writer made it already (``Committed``).
    """
    subject = event_subject(
        subject_token(envelope.org_id, "org id"),
        subject_token(envelope.key_id, "key id"),
        subject_token(envelope.event_type, "event type"),
        prefix,
    )
    if payload is None:
        payload = envelope_to_bytes(envelope)
    return subject, payload, {MSG_ID_HEADER: str(envelope.event_id)}


def is_event_fault(exc: BaseException) -> bool:
    """True when a failed publish is this event's fault (quarantine), not NATS's (retry)."""
    if isinstance(exc, (*_EVENT_FAULTS, Unpublishable)):
        return True
    return isinstance(exc, js_errors.APIError) and exc.err_code == _MESSAGE_TOO_LARGE


@dataclass(frozen=True, slots=True)
class Published:
    """What publishing a batch settled."""

    # How many leading events are settled: acknowledged by JetStream, or quarantined.
    settled: int
    # The quarantines among them.
    quarantined: list[QuarantinedKey]
    # NATS's failure (not the event's) that ended the settled run, if one did.
    failure: BaseException | None = None


async def publish_batch(
    publisher: AckedPublisher,
    batch: Sequence[Committed | Envelope | UnreadableEvent],
    *,
    prefix: str,
    stream: str,
    consumer: str,
    ack_timeout: float,
) -> Published:
    """Publish ``batch`` pipelined, then wait up to ``ack_timeout`` for every PubAck.

    An event at fault (unreadable, unpublishable, refused for itself) is
    quarantined for ``consumer`` and counts as settled; the first failure that
    is NATS's (no acknowledgement in time among them) ends the settled run there.
    """
    faults: dict[int, tuple[BaseException, bool]] = {}
    acks: dict[int, asyncio.Future[None]] = {}
    items = [item.envelope if isinstance(item, Committed) else item for item in batch]
    for at, item in enumerate(items):
        if isinstance(item, UnreadableEvent):
            faults[at] = (item.error, True)
            continue
        handed = batch[at]
        encoded = handed.encoded if isinstance(handed, Committed) else None
        try:
            subject, payload, headers = message_of(
                item, prefix, encoded.payload if encoded is not None else None
            )
        except Exception as exc:  # whatever this one event makes encoding raise
            faults[at] = (exc, True)
            continue
        try:
            acks[at] = await publisher.send(
                subject, payload, {**headers, EXPECTED_STREAM_HEADER: stream}
            )
        except Exception as exc:  # refused before it was sent: its fault, or NATS's
            faults[at] = (exc, is_event_fault(exc))
    try:
        if acks:
            await asyncio.wait(acks.values(), timeout=ack_timeout)
    finally:
        # Those not acknowledged in time (or when the relay stops) are waited for no more.
        publisher.forget([ack for ack in acks.values() if not ack.done()])
    for at, ack in acks.items():
        if ack.cancelled():
            faults[at] = (nats_errors.TimeoutError(), False)
        elif (error := ack.exception()) is not None:
            faults[at] = (error, is_event_fault(error))
    quarantined: list[QuarantinedKey] = []
    for at in sorted(faults):
        error, events_fault = faults[at]
        item = items[at]
        if not events_fault:
            return Published(at, quarantined, error)
        quarantined.append(
            set_aside(
                consumer,
                key_id=item.key_id,
                org_id=item.org_id,
                position=item.position,
                event_type=item.event_type,
                failure=error,
            )
        )
    return Published(len(batch), quarantined)
