"""Snapshots of the key registry: every key's folded state as of one log position.

A snapshot lets a starting replica (and a ``key_views`` rebuild) begin at a
known position instead of folding the whole log. It is never trusted for what
it claims alone. ``check`` refuses it, and the caller folds the log instead,
unless all of these hold:

- the log's hash at ``position`` is the ``log_hash`` it recorded (it was made
  from this very log, and the chain up to there is the one it folded);
- its ``format`` is this reader's (the same state fields and the same fold
  code, see ``snapshot_format``);
- it was made with this pepper (``pepper_fingerprint``);
- its ``seal`` holds: an HMAC, keyed from the pepper, over the header and the
  SHA-256 of every chunk, so that whoever can write to the database but does
  not hold the pepper cannot forge one (say, a revoked key made active again);
- every chunk matches its digest and decodes whole (checked as the chunks are
  read: ``read_bodies`` and ``decode_chunk`` raise ``SnapshotRefused``
  part-way, and the caller discards what it took).

A snapshot holds what the log holds, no more: states as ``evolve`` folds them
(secret hashes, never secrets; hints; public keys) and the keys set aside.

The keys are in chunks of up to ``CHUNK_KEYS``, in the columnar MessagePack
layout of ``service.store.snapshot_chunks`` (format 2). Snapshots of format 1
(JSON rows) have another ``format`` and are refused like any other version:
the log is folded instead, and the writer makes a new snapshot from the log.
The header lists the keys set aside with their last state as a JSON row
(``state_row``: ``KeyState``'s fields in declaration order, instants as
ISO-8601), which is rare enough for JSON.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import inspect
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import NamedTuple

import asyncpg
import structlog

from keyledger_client.events import codec, models
from service.domain import decider, state
from service.store import chunk_builder, snapshot_chunks
from service.store.pepper_fingerprint import pepper_fingerprint
from service.store.quarantine import QuarantinedKey, is_transient
from service.store.snapshot_chunks import Chunk, decode_chunk
from service.store.snapshot_rows import FIELDS, Row, SnapshotRefused

log = structlog.get_logger(__name__)

# Bump when the encoding changes; its code and the fold's are fingerprinted as well.
FORMAT_VERSION = 2
# Keys per chunk: few enough that the writer's encoding of one (a single call) holds
# a serving replica's event loop for about 15 ms, many enough that chunks are few.
CHUNK_KEYS = 10_000
_SEAL_LABEL = b"keyledger registry snapshot seal v1"


@cache
def snapshot_format() -> str:
    """What a snapshot must have been made with to be read here.

    The encoding's version, ``KeyState``'s fields, and the source of the code
    that folds events into states (event models and decoding, ``evolve``) and
    of the chunk encoding:
    after an upgrade that changes any of them, older snapshots are refused and
    the log is folded once more, rather than a state being read that today's
    fold would not produce.
    """
    digest = hashlib.sha256(f"{FORMAT_VERSION}:{','.join(FIELDS)}".encode())
    for module in (models, codec, decider, state, snapshot_chunks, chunk_builder):
        digest.update(inspect.getsource(module).encode())
    return f"v{FORMAT_VERSION}-{digest.hexdigest()[:32]}"


class SetAside(NamedTuple):
    """A key the snapshot's fold set aside, and its row before the event that failed
    (None when it failed at its first): read models keep that row, the index does not."""

    entry: QuarantinedKey
    last: Row | None


@dataclass(frozen=True, slots=True)
class SnapshotHeader:
    """What a snapshot claims: where it stands in the log, and what it is made of."""

    id: int
    position: int
    log_hash: str
    format: str
    pepper_fingerprint: str
    keys: int
    quarantined: str  # JSON: [[key_id, org_id, position, event_type, reason, row|null], …]
    chunk_digests: tuple[str, ...]
    seal: str

    def set_aside(self, consumer: str) -> list[SetAside]:
        """The keys this snapshot's fold set aside, as ``consumer``'s quarantines."""
        try:
            return [
                SetAside(QuarantinedKey(consumer, key_id, org_id, at, event_type, reason), last)
                for key_id, org_id, at, event_type, reason, last in json.loads(self.quarantined)
            ]
        except (ValueError, TypeError):
            raise SnapshotRefused("its list of keys set aside does not decode") from None

    def quarantines(self, consumer: str) -> list[QuarantinedKey]:
        """``set_aside`` without the rows."""
        return [aside.entry for aside in self.set_aside(consumer)]


def _seal(pepper: bytes, header: SnapshotHeader) -> str:
    key = hmac.new(pepper, _SEAL_LABEL, hashlib.sha256).digest()
    claims = [
        header.format,
        header.position,
        header.log_hash.strip(),
        header.pepper_fingerprint.strip(),
        header.keys,
        header.quarantined,
        list(header.chunk_digests),
    ]
    return hmac.new(key, json.dumps(claims).encode(), hashlib.sha256).hexdigest()


def quarantined_json(entries: Sequence[SetAside]) -> str:
    """Keys set aside, as a header records them."""
    return json.dumps(
        [
            [e.key_id, e.org_id, e.position, e.event_type, e.reason, last]
            for e, last in sorted(entries, key=lambda aside: aside.entry.position)
        ]
    )


_HEADER_COLUMNS = (
    "id, position, log_hash, format, pepper_fingerprint, keys, quarantined, chunk_digests, seal"
)


def _header(row: asyncpg.Record) -> SnapshotHeader:
    return SnapshotHeader(
        row["id"],
        row["position"],
        row["log_hash"],
        row["format"],
        row["pepper_fingerprint"],
        row["keys"],
        row["quarantined"],
        tuple(row["chunk_digests"]),
        row["seal"],
    )


class SnapshotStore:
    """The ``registry_snapshots`` tables: write, check, read, prune."""

    def __init__(self, pepper: bytes) -> None:
        self.pepper = pepper
        self.fingerprint = pepper_fingerprint(pepper)

    async def newest(self, conn: asyncpg.Connection, limit: int = 3) -> list[SnapshotHeader]:
        """Up to ``limit`` snapshot headers, newest position first (unchecked)."""
        rows = await conn.fetch(
            f"SELECT {_HEADER_COLUMNS} FROM registry_snapshots"
            " ORDER BY position DESC, id DESC LIMIT $1",
            limit,
        )
        return [_header(row) for row in rows]

    async def check(self, conn: asyncpg.Connection, header: SnapshotHeader) -> None:
        """``SnapshotRefused`` unless the header checks out (chunks are checked as read)."""
        if header.format != snapshot_format():
            raise SnapshotRefused(f"written by another version (format {header.format})")
        if not hmac.compare_digest(header.pepper_fingerprint.strip(), self.fingerprint):
            raise SnapshotRefused("written with another pepper")
        if not hmac.compare_digest(header.seal.strip(), _seal(self.pepper, header)):
            raise SnapshotRefused("its seal does not hold (altered after it was written)")
        log_hash = await conn.fetchval(
            "SELECT hash FROM events WHERE position = $1", header.position
        )
        if log_hash is None:
            raise SnapshotRefused(f"the log has no event at its position {header.position}")
        if not hmac.compare_digest(log_hash.strip(), header.log_hash.strip()):
            raise SnapshotRefused(
                f"the log's hash at position {header.position} is not the one it was made from"
            )

    async def load_newest(
        self,
        conn: asyncpg.Connection,
        take: Callable[[Chunk], Awaitable[None]],
        reset: Callable[[], Awaitable[None]],
    ) -> SnapshotHeader | None:
        """Give ``take`` the chunks of the newest snapshot that checks out, one by one.

        A snapshot that does not (``check``, or a chunk found damaged part-way, or
        a chunk ``take`` refuses) is logged as a warning, ``reset`` undoes what
        ``take`` got, and the next older one is tried. None: start from the log.
        """
        for header in await self.newest(conn):
            try:
                await self.check(conn, header)
                async for body in self.read_bodies(conn, header):
                    await take(decode_chunk(body))
                header.quarantines("")  # it decodes
                return header
            except Exception as exc:
                await reset()
                if is_transient(exc):
                    raise
                refused(header, exc)
        return None

    async def read_bodies(
        self, conn: asyncpg.Connection, header: SnapshotHeader
    ) -> AsyncIterator[bytes]:
        """The chunk bodies of a checked snapshot, each matching its digest, in order
        (``SnapshotRefused`` part-way if one is missing or does not match)."""
        for number, digest in enumerate(header.chunk_digests):
            body: bytes | None = await conn.fetchval(
                "SELECT body FROM registry_snapshot_chunks WHERE snapshot_id = $1 AND chunk = $2",
                header.id,
                number,
            )
            if body is None:
                raise SnapshotRefused(f"chunk {number} is missing")
            if not hmac.compare_digest(hashlib.sha256(body).hexdigest(), digest):
                raise SnapshotRefused(f"chunk {number} does not match its digest")
            yield body

    async def write(
        self,
        conn: asyncpg.Connection,
        *,
        position: int,
        log_hash: str,
        chunks: AsyncIterator[tuple[bytes, int]],
        quarantined: Callable[[], Sequence[SetAside]] = tuple,
    ) -> SnapshotHeader:
        """Store a snapshot in one transaction: ``chunks`` are (body from ``encode_chunk``,
        keys in it); ``quarantined`` is asked for the keys set aside once they are written."""
        async with conn.transaction():
            snapshot_id = await conn.fetchval(
                """INSERT INTO registry_snapshots (position, log_hash, format,
                       pepper_fingerprint, keys, quarantined, chunk_digests, seal)
                   VALUES ($1, $2, $3, $4, 0, '[]', '{}', '') RETURNING id""",
                position,
                log_hash,
                snapshot_format(),
                self.fingerprint,
            )
            digests: list[str] = []
            keys = 0
            async for body, rows in chunks:
                await conn.execute(
                    "INSERT INTO registry_snapshot_chunks (snapshot_id, chunk, body)"
                    " VALUES ($1, $2, $3)",
                    snapshot_id,
                    len(digests),
                    body,
                )
                digests.append(hashlib.sha256(body).hexdigest())
                keys += rows
            unsealed = SnapshotHeader(
                snapshot_id,
                position,
                log_hash,
                snapshot_format(),
                self.fingerprint,
                keys,
                quarantined_json(quarantined()),
                tuple(digests),
                "",
            )
            header = dataclasses.replace(unsealed, seal=_seal(self.pepper, unsealed))
            await conn.execute(
                """UPDATE registry_snapshots SET keys = $2, quarantined = $3,
                       chunk_digests = $4, seal = $5 WHERE id = $1""",
                snapshot_id,
                header.keys,
                header.quarantined,
                list(header.chunk_digests),
                header.seal,
            )
        return header

    async def prune(self, conn: asyncpg.Connection, keep: int) -> int:
        """Delete all but the ``keep`` newest snapshots; returns how many went."""
        deleted: str = await conn.execute(
            """DELETE FROM registry_snapshots WHERE id NOT IN (
                   SELECT id FROM registry_snapshots ORDER BY position DESC, id DESC LIMIT $1)""",
            keep,
        )
        return int(deleted.split()[-1])


def refused(header: SnapshotHeader, exc: Exception) -> None:
    """Log that a snapshot is not used, and why (never its data)."""
    log.warning(
        "registry_snapshot_refused",
        snapshot=header.id,
        position=header.position,
        reason=str(exc) if isinstance(exc, SnapshotRefused) else type(exc).__name__,
    )
