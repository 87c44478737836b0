"""Index entries built straight from a registry snapshot chunk (a cold start).

A cold start builds a million entries: ``load_chunk`` makes each from the
chunk's columns in one tight loop, with the chunk's tables of org ids,
(type, environment, status) triples and scope sets shared through the
index's ``Interner`` once per chunk rather than once per key, then gives the
few keys with extras theirs. It builds the entry ``entry_from_state`` makes
of the same state (``tests/unit/test_snapshot_chunks.py`` checks it), without
building states, dicts or models first.
"""

from __future__ import annotations

import sys

from service.store.snapshot_chunks import (
    Chunk,
    KeyExtrasRecord,
    credits_of,
    metadata_of,
    odd_states,
    rate_limits_of,
)
from service.verification.entries import (
    NO_EXTRAS,
    IndexEntry,
    Interner,
    KeyExtras,
    entry_from_state,
    shared_networks,
    shared_rate_limit,
    signing_material,
)


def load_chunk(
    chunk: Chunk,
    intern: Interner,
    by_id: dict[str, IndexEntry],
    by_hash: dict[bytes, IndexEntry],
) -> None:
    """Add an entry for every key of ``chunk`` to ``by_id`` and ``by_hash``.

    Raises (anything) on a chunk that does not make entries; the caller discards
    the whole index then."""
    orgs = [sys.intern(org) for org in chunk.orgs]
    kinds = [intern(tuple(sys.intern(word) for word in kind)) for kind in chunk.kinds]
    scope_sets = [intern(scopes) for scopes in chunk.scope_sets]
    built: list[IndexEntry] = []
    keep = built.append
    new = IndexEntry.__new__
    for key_id, org, name, kind, scopes, expires_at, digest, version in zip(
        chunk.key_ids,
        chunk.org,
        chunk.names,
        chunk.kind,
        chunk.scopes,
        chunk.expires_at,
        chunk.secret_hash,
        chunk.version,
        strict=True,
    ):
        entry = new(IndexEntry)
        entry.key_id = key_id
        entry.org_id = orgs[org]
        entry.name = name
        entry.kind = kinds[kind]
        entry.scopes = scope_sets[scopes]
        entry.expires_at = expires_at
        entry.secret_hash = digest
        entry.version = version
        entry.extras = NO_EXTRAS
        by_id[key_id] = entry
        if digest is not None:
            by_hash[digest] = entry
        keep(entry)
    for record in chunk.extras:
        entry = built[record.row]
        entry.extras = key_extras(record, entry.kind[0], intern)
        if record.odd_secret_hash:
            # Not a hex digest: a replica that folds the log refuses this key as well.
            entry.secret_hash = bytes.fromhex(record.odd_secret_hash)
            by_hash[entry.secret_hash] = entry
        previous = entry.extras.previous_hash
        if previous is not None:
            by_hash[previous] = entry
    for state in odd_states(chunk.odd_states):
        entry = entry_from_state(state, intern=intern)
        by_id[entry.key_id] = entry
        for digest in (entry.secret_hash, entry.previous_hash):
            if digest is not None:
                by_hash[digest] = entry


def key_extras(record: KeyExtrasRecord, key_type: str, intern: Interner) -> KeyExtras:
    """The ``KeyExtras`` of an extras record (``NO_EXTRAS`` when it sets none of them),
    as ``entry_from_state`` makes them.

    Most records hold one or two things (a rotated key: its previous secret and
    its grace), so each helper is called only for what the record holds."""
    limit, previous = record.rate_limit, record.previous_secret_hash
    if record.odd_previous_secret_hash:
        # Not a hex digest: a replica that folds the log refuses this key as well.
        previous = bytes.fromhex(record.odd_previous_secret_hash)
    extras = KeyExtras(
        allowed_origins=intern(record.allowed_origins) if record.allowed_origins else (),
        resource=record.resource,
        metadata=metadata_of(record.metadata) or None if record.metadata is not None else None,
        rate_limit=shared_rate_limit(intern, limit[0], limit[1]) if limit else None,
        previous_hash=previous,  # b"" too, as entry_from_state makes of " "
        previous_valid_until=record.previous_valid_until,
        signer=signing_material(
            key_type, record.algorithm, record.public_key, record.previous_public_key, None
        )
        if record.public_key
        else None,
        rate_limits=intern(rate_limits_of(record.rate_limits)) if record.rate_limits else (),
        credits=credits_of(record.credits),
        credits_version=record.credits_version,
        allowed_cidrs=shared_networks(intern, record.allowed_cidrs),
        identity_id=record.identity_id,
    )
    return NO_EXTRAS if extras.is_none() else extras
