"""A log for snapshot tests: a few keys, renames and a poison event; and indexes loaded
from it (from a snapshot or from the whole log), pictured for comparison."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg

from bench.support import migrated_database
from events.models import Envelope
from service.store.event_store import EventStore
from service.store.registry_snapshot import SnapshotStore
from service.verification.feed import IndexFeed
from service.verification.index import IndexEntry, VerificationIndex
from tests.support.event_log import TEST_ACTOR, append_rename, generated
from tests.support.poison import inject

_store = EventStore()


@contextlib.asynccontextmanager
async def snapshot_log_database(server_url: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A database of its own whose log has five keys of ``org-a`` (see ``grow``)."""
    async with migrated_database(server_url, prefix="keyledger_snap") as (url, pool):
        async with pool.acquire() as conn:
            await grow(conn, "org-a", 5)
        yield url, pool


async def append_key(conn: asyncpg.Connection, org: str, name: str) -> Envelope:
    """A ``KeyGenerated`` with a secret hash of its own (as real keys have)."""
    event = generated(org, name).model_copy(update={"secret_hash": secrets.token_hex(32)})
    async with conn.transaction():
        await _store.lock(conn)
        [envelope] = await _store.append(conn, [event], actor=TEST_ACTOR, expected_version=0)
    return envelope


async def grow(conn: asyncpg.Connection, org: str, keys: int) -> None:
    for number in range(keys):
        key = await append_key(conn, org, f"key {number}")
        await append_rename(conn, key, 1, f"renamed {number}")
    # A key whose second event is impossible: every consumer sets it aside.
    poisoned = await append_key(conn, org, "poisoned")
    await inject(
        conn,
        org,
        event_type="KeyEnabled",
        data={},
        key_id=poisoned.key_id,
        stream_version=2,
    )


async def loaded(pool: asyncpg.Pool, url: str, snapshots: SnapshotStore | None) -> IndexFeed:
    feed = IndexFeed(VerificationIndex(), pool, url, snapshots=snapshots)
    await feed.start(follow_postgres=False)
    return feed


def picture(index: VerificationIndex) -> dict[str, Any]:
    """Everything an index holds (signers by their PEMs), to compare two indexes."""
    entries = {}
    for key_id, entry in index._by_id.items():
        values = {name: getattr(entry, name) for name in IndexEntry.FIELDS}
        values["signer"] = entry.signer.pem if entry.signer else None
        entries[key_id] = values
    # Two keys with one secret hash exist only in hand-written rows (the registry refuses
    # them); which of them a lookup finds is left out of the comparison.
    holders: dict[bytes, int] = {}
    for entry in index._by_id.values():
        for digest in {entry.secret_hash, entry.previous_hash} - {None}:
            assert digest is not None
            holders[digest] = holders.get(digest, 0) + 1
    return {
        "position": index.position,
        "entries": entries,
        "hashes": {
            digest: entry.key_id
            for digest, entry in index._by_hash.items()
            if holders.get(digest) == 1
        },
        "quarantined": {k: (q.position, q.event_type) for k, q in index.quarantined.items()},
    }
