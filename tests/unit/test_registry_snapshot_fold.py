"""Registry snapshots, pure: a snapshot plus the log after it is the whole log folded
(the same keys, entries and quarantines as the index makes). The chunk encoding itself:
``test_snapshot_chunks.py``."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from events.codec import GENESIS_HASH, seal
from events.models import (
    Actor,
    CreditRefill,
    Credits,
    Envelope,
    KeyCreditsChanged,
    KeyDisabled,
    KeyEnabled,
    KeyEvent,
    KeyExpired,
    KeyExpiringSoon,
    KeyGenerated,
    KeyIdentityChanged,
    KeyIpAllowlistChanged,
    KeyRateLimitsChanged,
    KeyRenamed,
    KeyRevoked,
    KeyRotated,
    NamedRateLimit,
    RateLimit,
)
from service.domain.decider import evolve
from service.domain.key_material import new_signing_key_pair
from service.domain.state import KeyState
from service.snapshot_tail import Tail
from service.snapshot_writer import born_chunks, fold_chunk
from service.store.chunk_builder import encode_chunk
from service.store.event_rows import row_of
from service.store.quarantine import INDEX_CONSUMER
from service.store.registry_snapshot import quarantined_json
from service.store.snapshot_chunks import chunk_states, decode_chunk
from service.store.snapshot_rows import SnapshotRefused, state_from_row, state_row
from service.verification.index import IndexEntry, VerificationIndex

KEYS = [f"key_01J{n:023d}" for n in range(4)]
START = datetime(2030, 1, 1, tzinfo=UTC)
PEM = new_signing_key_pair("ed25519").public_pem
PEM_2 = new_signing_key_pair("ed25519").public_pem


def _event(kind: str, key: int, step: int, flavour: int) -> KeyEvent:
    base: dict[str, Any] = {
        "key_id": KEYS[key],
        "org_id": f"org-{key % 2}",
        "occurred_at": START + timedelta(seconds=step),
    }
    signing = flavour % 3 == 2
    if kind == "generate":
        return KeyGenerated(
            **base,
            name=f"key {key}",
            type="signing" if signing else ("embed" if flavour % 3 == 1 else "secret"),
            environment="test" if flavour % 2 else "live",
            scopes=("a:*", "b:read")[: flavour % 3],
            allowed_origins=("https://x.example",) if flavour % 3 == 1 else (),
            resource="res" if flavour % 3 == 1 else None,
            algorithm="ed25519" if signing else None,
            public_key=PEM if signing else None,
            secret_hash=None if signing else f"{key:02x}{step:02x}" * 16,
            hint="sk_live_AAAA…ZZZZ",
            metadata={"n": flavour, "nested": {"é": [1, None]}} if flavour % 2 else {},
            rate_limit=RateLimit(limit=flavour + 1, window="1m") if flavour % 2 else None,
            expires_at=START + timedelta(days=flavour) if flavour % 4 == 0 else None,
        )
    if kind == "rename":
        return KeyRenamed(**base, name=f"renamed {step}", previous_name="?")
    if kind == "disable":
        return KeyDisabled(**base, reason="pause")
    if kind == "enable":
        return KeyEnabled(**base)
    if kind == "revoke":
        return KeyRevoked(**base, reason="compromised")
    if kind == "expire":
        return KeyExpired(**base, expires_at=base["occurred_at"])
    if kind == "change":
        return _change(base, step, flavour)
    if kind == "warn":
        expires_at = START + timedelta(days=flavour)
        return KeyExpiringSoon(**base, expires_at=expires_at, lead=("7d", "1d")[flavour % 2])
    return KeyRotated(
        **base,
        secret_hash=None if signing else f"{step:02x}{key:02x}" * 16,
        public_key=PEM_2 if signing else None,
        previous_valid_until=base["occurred_at"] + timedelta(hours=1),
    )


def _change(base: dict[str, Any], step: int, flavour: int) -> KeyEvent:
    """A change after issue: usage limits, IP allowlist or identity (the ``previous_``
    values are not the state's: the decider would not write them, and both folds must
    set the key aside alike)."""
    if flavour % 4 == 0:
        limits = (NamedRateLimit(name="burst", limit=step + 1, window="1s"),)
        return KeyRateLimitsChanged(**base, rate_limits=limits, previous_rate_limits=())
    if flavour % 4 == 1:
        refill = CreditRefill(amount=10, interval="daily") if flavour % 2 else None
        credits = Credits(remaining=step, refill=refill)
        return KeyCreditsChanged(**base, credits=credits, previous_credits=None)
    if flavour % 4 == 2:
        cidrs = ("10.0.0.0/8", "2001:db8::/32")[: 1 + step % 2]
        return KeyIpAllowlistChanged(**base, allowed_cidrs=cidrs, previous_allowed_cidrs=())
    return KeyIdentityChanged(**base, identity_id=f"user-{step}", previous_identity_id=None)


def _log(steps: list[tuple[str, int, int]]) -> list[Envelope]:
    """Sealed envelopes, valid or not for the decider (impossible ones quarantine a key)."""
    versions = dict.fromkeys(KEYS, 0)
    previous = GENESIS_HASH
    envelopes = []
    for position, (kind, key, flavour) in enumerate(steps, start=1):
        event = _event(kind, key, position, flavour)
        versions[event.key_id] += 1
        envelope = seal(
            event,
            event_id=uuid.uuid4(),
            stream_version=versions[event.key_id],
            position=position,
            actor=Actor(id="test"),
            previous_hash=previous,
        )
        previous = envelope.hash
        envelopes.append(envelope)
    return envelopes


KINDS = ["generate", "rename", "disable", "enable", "revoke", "expire", "rotate", "change", "warn"]
log_steps = st.lists(
    st.tuples(st.sampled_from(KINDS), st.integers(0, len(KEYS) - 1), st.integers(0, 7)),
    max_size=30,
)


def _advance(
    body: bytes | None, quarantined: dict[str, Any], envelopes: list[Envelope], start: int
) -> list[bytes]:
    """What the writer does: the old snapshot's chunk with the log after it folded in,
    then chunks of the keys born since (chunk bodies, as stored)."""
    tail = Tail(start, set(quarantined))
    for envelope in envelopes:
        tail.add(row_of(envelope))  # as the writer reads it

    async def fold() -> list[bytes]:
        chunks = []
        if body is not None:
            folded = await fold_chunk(decode_chunk(body), tail.by_key, quarantined)
            chunks.append(folded.body())
        async for born in born_chunks(tail.by_key, quarantined):
            chunks.append(born.body())
        return chunks

    return asyncio.run(fold())


def _one_chunk(chunks: list[bytes]) -> bytes:
    """The chunks as one (a few keys fit in one chunk: the next snapshot folds into it)."""
    states: list[KeyState] = []
    for chunk in chunks:
        states += chunk_states(decode_chunk(chunk))
    return encode_chunk(states)


def _picture(index: VerificationIndex) -> dict[str, Any]:
    """Everything the index holds, comparable across two indexes."""
    entries = {}
    for key_id in KEYS:
        entry = index.by_key_id(key_id)
        if entry is None:
            continue
        values = {name: getattr(entry, name) for name in IndexEntry.FIELDS if name != "signer"}
        signer = entry.signer
        values["signer"] = (
            (signer.algorithm, signer.pem, signer.previous_pem) if signer is not None else None
        )
        entries[key_id] = values
    hashes = {
        digest: entry.key_id
        for entry in (index.by_key_id(k) for k in KEYS)
        if entry is not None
        for digest in (entry.secret_hash, entry.previous_hash)
        if digest is not None and index.by_secret_hash(digest) is entry
    }
    quarantined = {k: (q.position, q.event_type) for k, q in index.quarantined.items()}
    return {"position": index.position, "entries": entries, "hashes": hashes, "q": quarantined}


@settings(max_examples=150, deadline=None)
@given(log_steps, st.data())
def test_a_snapshot_and_the_log_after_it_fold_like_the_whole_log(
    steps: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    envelopes = _log(steps)
    whole = VerificationIndex()
    for envelope in envelopes:
        whole.offer(envelope)

    # Two snapshots (the second advancing the first), then the rest of the log.
    first = data.draw(st.integers(0, len(envelopes)))
    second = data.draw(st.integers(first, len(envelopes)))
    quarantined: dict[str, Any] = {}
    chunk = _one_chunk(_advance(None, quarantined, envelopes[:first], 0))
    chunks = _advance(chunk, quarantined, envelopes[first:second], first)
    started = VerificationIndex()
    for body in chunks:
        started.load_chunk(decode_chunk(body))
    started.start_at(second, [aside.entry for aside in quarantined.values()])
    for envelope in envelopes[second:]:
        started.offer(envelope)

    assert _picture(started) == _picture(whole)


def test_a_damaged_header_row_is_refused() -> None:
    with pytest.raises(SnapshotRefused):
        state_from_row(["too", "short"])


def test_quarantines_round_trip_through_a_header() -> None:
    from service.store.quarantine import QuarantinedKey
    from service.store.registry_snapshot import SetAside, SnapshotHeader

    entry = QuarantinedKey(INDEX_CONSUMER, KEYS[0], "org-0", 7, "KeyEnabled", "ImpossibleEvent")
    kept = [SetAside(entry, state_row(_state())), SetAside(entry, None)]
    header = SnapshotHeader(1, 9, "0" * 64, "f", "p", 0, quarantined_json(kept), (), "")
    assert header.set_aside(INDEX_CONSUMER) == kept
    assert header.quarantines(INDEX_CONSUMER) == [entry, entry]
    broken = SnapshotHeader(1, 9, "0" * 64, "f", "p", 0, "[[1]]", (), "")
    with pytest.raises(SnapshotRefused):
        broken.quarantines(INDEX_CONSUMER)


def _state() -> Any:
    event = _event("generate", 0, 1, 1)
    return evolve(None, event)
