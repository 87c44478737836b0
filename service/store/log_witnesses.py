"""Witnesses of the log head: a truncated log is detected (docs/security.md §6).

The hash chain proves that every event the log holds is intact, but not that
the log still holds every event it had: deleting the last events (triggers
bypassed by a superuser, a restored backup) leaves a shorter, perfectly
chained log. Other places remember how far the log once reached:

- JetStream: the last message published carries that event's position and hash;
- the outbox relay's checkpoint: the last position JetStream acknowledged;
- every projection's checkpoint: the last position it applied;
- in a running replica, its verification index: the last position it applied.

A witness the log does not hold — its position is beyond the head, or the
event the log holds there has another hash — means the log was truncated
(``log_truncated``). A head merely ahead of its witnesses is normal lag.

The head and the checkpoints are read in one statement (one snapshot), and
witnesses from elsewhere are read *before* it: events only ever become
visible in PostgreSQL before anything can witness them, so a log that grows
meanwhile is never mistaken for a truncated one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from events.codec import GENESIS_HASH
from service.store.audit_chain import ChainReport
from service.store.outbox_checkpoint import CHECKPOINTS_AS_WITNESSES

LOG_TRUNCATED: Final = "log_truncated"

# One snapshot: the head, the checkpoints, and the log's hash where a witness has one.
_HEAD_AND_CHECKPOINTS = f"""
    SELECT 'head' AS source, position, hash FROM
        (SELECT position, hash FROM events ORDER BY position DESC LIMIT 1) AS last
    UNION ALL
    {CHECKPOINTS_AS_WITNESSES}
    UNION ALL
    SELECT 'projection:' || name, position, NULL FROM projection_checkpoints
    WHERE position > 0
    UNION ALL
    SELECT 'held', position, hash FROM events WHERE position = ANY($1::bigint[])
"""


@dataclass(frozen=True, slots=True)
class Witness:
    """Somewhere that saw the log reach ``position`` (with ``hash`` there, when known)."""

    source: str
    position: int
    hash: str | None = None


@dataclass(frozen=True, slots=True)
class WitnessReport:
    """The log head against every witness; ``missing`` are the witnesses it does not hold."""

    head: int
    head_hash: str
    witnesses: tuple[Witness, ...]
    missing: tuple[Witness, ...]
    # Witnesses that could not be read this time (e.g. NATS unreachable).
    unchecked: tuple[str, ...] = field(default=())

    @property
    def truncated(self) -> bool:
        return bool(self.missing)

    def describe(self) -> str:
        """One line naming the head and the furthest witness it does not hold."""
        if not self.missing:
            return f"the log head (position {self.head}) holds every witness"
        furthest = max(self.missing, key=lambda w: w.position)
        if furthest.position > self.head:
            seen = f"{furthest.source} saw position {furthest.position}"
        else:
            seen = f"{furthest.source} saw another event at position {furthest.position}"
        return f"{LOG_TRUNCATED}: the log head is position {self.head}, but {seen}"

    def as_json(self) -> dict[str, Any]:
        missing = set(self.missing)
        return {
            LOG_TRUNCATED: self.truncated,
            "head": {"position": self.head, "hash": self.head_hash},
            "witnesses": [
                {
                    "source": w.source,
                    "position": w.position,
                    "hash": w.hash,
                    "held": w not in missing,
                }
                for w in self.witnesses
            ],
            "unchecked": list(self.unchecked),
        }


def audit_json(chain: ChainReport, witnesses: WitnessReport) -> dict[str, Any]:
    """``audit verify``'s answer: the chain walk, then the head against its witnesses.

    ``ok`` holds only when both do; a broken chain's reason comes first.
    """
    body = chain.as_json() | witnesses.as_json()
    if witnesses.truncated:
        body["ok"] = False
        body.setdefault("reason", witnesses.describe())
    return body


def witnesses_not_held(
    head: int, hashes: Mapping[int, str], witnesses: Iterable[Witness]
) -> tuple[Witness, ...]:
    """The witnesses a log ending at ``head`` (with ``hashes`` by position) does not hold."""
    return tuple(
        w
        for w in witnesses
        if w.position > head or (w.hash is not None and hashes.get(w.position) != w.hash)
    )


async def read_witness_report(
    conn: asyncpg.Connection | asyncpg.Pool,
    outside: Iterable[Witness] = (),
    unchecked: Iterable[str] = (),
) -> WitnessReport:
    """Compare the head with the checkpoints and with ``outside`` witnesses read beforehand."""
    outside = tuple(outside)
    positions = sorted({w.position for w in outside if w.hash is not None})
    rows = await conn.fetch(_HEAD_AND_CHECKPOINTS, positions)
    head, head_hash = 0, GENESIS_HASH
    hashes: dict[int, str] = {}
    checkpoints: list[Witness] = []
    for source, position, hash_ in rows:
        if source == "head":
            head, head_hash = position, hash_.strip()
        elif source == "held":
            hashes[position] = hash_.strip()
        else:
            checkpoints.append(Witness(source, position))
    witnesses = (*outside, *sorted(checkpoints, key=lambda w: w.source))
    return WitnessReport(
        head=head,
        head_hash=head_hash,
        witnesses=witnesses,
        missing=witnesses_not_held(head, hashes, witnesses),
        unchecked=tuple(unchecked),
    )


async def refuse_if_truncated(
    db: asyncpg.Connection | asyncpg.Pool, outside: Iterable[Witness] = ()
) -> None:
    """For appends outside a running app (CLI): never write onto a truncated log.

    A new event would take the position of a lost one, and the lost tail could
    then not be re-appended from JetStream. ``outside`` witnesses (JetStream's
    last published event) matter most after a restored backup, which rolls
    the checkpoints back with the log."""
    report = await read_witness_report(db, outside)
    if report.truncated:
        raise RuntimeError(f"{report.describe()}; run `keyledger audit repair` first")


def published_position(payload: bytes) -> tuple[int, str] | None:
    """Position and hash of a published envelope, or None when it does not carry them.

    Only these two fields are read, so an event this version cannot decode
    still witnesses how far the log reached.
    """
    try:
        document = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(document, dict):
        return None
    position, hash_ = document.get("position"), document.get("hash")
    if type(position) is not int or not isinstance(hash_, str):
        return None
    return position, hash_


async def jetstream_witness(js: JetStreamContext, stream: str) -> Witness | None:
    """The last message of ``stream`` as a witness; None when nothing was published."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return None
    if not info.state.messages:
        return None
    message = await js.get_msg(stream, info.state.last_seq)
    published = published_position(message.data or b"")
    if published is None:
        return None
    return Witness(f"jetstream:{stream}", *published)
