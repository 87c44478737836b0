"""``keyledger audit repair``: re-append a truncated log's lost tail from JetStream.

Every event the relay published is in the JetStream stream, hash included.
Repair reads the messages after the log head, and re-appends them exactly as
they were (same event id, position, hash) — but only when they continue the
chain: the first one's hash must follow from the head's hash, each next one
from the one before, positions head+1, head+2… without a hole. Anything else
is refused and nothing is written: repair restores the log, it never
rewrites it. The insert runs under the append lock, checks the head again,
updates the write side's key registry and notifies, so running replicas (their
indexes, projections and truncation guards) catch up on their own.

When a log counts as truncated, and what is refused meanwhile:
docs/security.md §6.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import asyncpg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from pydantic import ValidationError

from events.codec import chain_hash, envelope_body, envelope_from_json
from events.models import Envelope
from service.store.event_store import EVENT_COLUMNS, EventStore, UnfoldableStream, row_of
from service.store.key_registry import KeyRegistry
from service.store.log_witnesses import published_position


class RepairRefused(RuntimeError):
    """The stream does not hold a tail that continues the log's chain."""


@dataclass(frozen=True, slots=True)
class RepairReport:
    """What repair did: the head before and after, and the positions re-appended."""

    head_before: int
    head_after: int

    @property
    def appended(self) -> int:
        return self.head_after - self.head_before

    def as_json(self) -> dict[str, int]:
        return {
            "head_before": self.head_before,
            "head_after": self.head_after,
            "appended": self.appended,
        }


async def published_after(
    js: JetStreamContext, stream: str, head: int, head_hash: str
) -> list[Envelope]:
    """The published envelopes after position ``head``, one per position, in position order.

    The stream is read backwards from its last message until every position
    after ``head`` up to the highest one seen is found (a message republished
    after a relay crash may appear twice; both copies must agree). A published
    event at ``head`` itself with another hash means the log was not cut but
    rewritten there: refused.
    """
    try:
        info = await js.stream_info(stream)
    except NotFoundError as exc:
        raise RepairRefused(f"JetStream stream {stream!r} does not exist") from exc
    found: dict[int, Envelope] = {}
    highest = head
    sequence = info.state.last_seq
    while sequence >= max(info.state.first_seq, 1):
        try:
            message = await js.get_msg(stream, sequence)
        except NotFoundError:
            sequence -= 1  # a deleted message leaves a hole in the sequence
            continue
        sequence -= 1
        data = message.data or b""
        published = published_position(data)
        if published is None:
            continue  # not an event of ours; a position it should have held shows as missing
        position, published_hash = published
        if position == head and published_hash != head_hash:
            raise RepairRefused(
                f"the log's event at position {head} is not the one published to JetStream;"
                " the log was rewritten, not only cut, and repair does not overwrite"
            )
        if position > head:
            try:
                envelope = envelope_from_json(data)
            except (ValidationError, ValueError, RecursionError) as exc:
                raise RepairRefused(
                    f"the published event at position {position} cannot be read"
                ) from exc
            seen = found.setdefault(position, envelope)
            if seen.hash != envelope.hash:
                raise RepairRefused(f"JetStream holds two different events at position {position}")
            highest = max(highest, position)
        elif all(p in found for p in range(head + 1, highest + 1)):
            break  # everything after the head is found, and the stream is now older
    missing = [p for p in range(head + 1, highest + 1) if p not in found]
    if missing:
        raise RepairRefused(f"JetStream no longer holds position {missing[0]}")
    return [found[p] for p in range(head + 1, highest + 1)]


def check_continues(head: int, head_hash: str, tail: Sequence[Envelope]) -> None:
    """Refuse a tail that is not positions head+1… each chained to the one before."""
    previous_hash, expected = head_hash, head + 1
    for envelope in tail:
        if envelope.position != expected:
            raise RepairRefused(f"expected position {expected}, JetStream has {envelope.position}")
        if chain_hash(previous_hash, envelope_body(envelope)) != envelope.hash:
            raise RepairRefused(
                f"the published event at position {envelope.position} does not continue the"
                " log's hash chain; nothing was re-appended"
            )
        previous_hash, expected = envelope.hash, expected + 1


async def repair_log(conn: asyncpg.Connection, js: JetStreamContext, stream: str) -> RepairReport:
    """Re-append the published events the log lacks; a no-op when it lacks none."""
    store = EventStore()
    head = await store.read_head(conn)
    head_hash = head.hash.strip()
    tail = await published_after(js, stream, head.position, head_hash)
    check_continues(head.position, head_hash, tail)
    if not tail:
        return RepairReport(head.position, head.position)
    registry = KeyRegistry()
    async with conn.transaction():
        await store.lock(conn)
        now = await store.read_head(conn)
        if (now.position, now.hash.strip()) != (head.position, head_hash):
            raise RepairRefused("the log changed while repairing; run repair again")
        await conn.executemany(
            f"INSERT INTO events ({EVENT_COLUMNS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)",
            [row_of(envelope) for envelope in tail],
        )
        # The registry is the write side's view of each key: fold the repaired keys again.
        for key_id in dict.fromkeys(envelope.key_id for envelope in tail):
            try:
                state = await store.load_state(conn, key_id)
            except UnfoldableStream:
                # An earlier row of this key is poison (docs/security.md §5): its consumers
                # have set it aside and it takes no command; the repaired log is still whole.
                continue
            if state is not None:
                await registry.save(conn, state)
        await store.notify(conn, tail[-1].position)
    return RepairReport(head.position, tail[-1].position)
