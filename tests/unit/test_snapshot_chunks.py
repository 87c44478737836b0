"""The snapshot chunk layout (format 2), pure: any key state round-trips through a chunk,
the index builds from a chunk the entries it builds from the states, and a chunk that
is damaged, truncated or of another layout is refused whole."""

from __future__ import annotations

import ipaddress
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, get_args

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.snapshot_load import bench_state
from events.models import CreditRefill, Credits, NamedRateLimit, RateLimit
from events.vocabulary import Algorithm, Environment, KeyType, RateWindow, Status
from service.domain.key_material import new_signing_key_pair
from service.domain.state import KeyState
from service.store.chunk_builder import ChunkBuilder, encode_chunk
from service.store.snapshot_chunks import (
    CHUNK_FORMAT,
    chunk_key_ids,
    chunk_states,
    cold_columns,
    decode_chunk,
)
from service.store.snapshot_rows import SnapshotRefused, state_row
from service.verification.entries import IndexEntry, Interner, entry_from_state
from service.verification.snapshot_entries import load_chunk

PEMS = [new_signing_key_pair("ed25519").public_pem, new_signing_key_pair("rsa-2048").public_pem]
HEX = st.binary(min_size=32, max_size=32).map(bytes.hex)
# Text as the log may hold it: any code point, lone surrogates included.
TEXT = st.text(max_size=12)
SHORT = st.text(st.characters(codec="utf-8"), max_size=8)
INSTANT = st.datetimes(
    min_value=datetime(1, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30))]) | st.none(),
)
BIG = st.integers(1, 2**70)  # past 64 bits: what the models accept, MessagePack cannot
JSON_VALUE = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
    max_leaves=6,
)
CIDR = st.builds(
    lambda address, bits: str(ipaddress.ip_network(f"{address}/{bits}", strict=False)),
    st.ip_addresses(v=4),
    st.integers(8, 32),
) | st.sampled_from(["2001:db8::/32", "::1/128"])
WINDOWS = st.sampled_from(get_args(RateWindow))


@st.composite
def key_states(draw: st.DrawFn, key_id: str) -> KeyState:
    """Any state a key can be in, extras or not, odd secret hashes included."""
    key_type = draw(st.sampled_from(get_args(KeyType)))
    signing = key_type == "signing" and draw(st.booleans())
    digest = st.none() | HEX | TEXT  # TEXT: what only a hand-written event holds
    credits = st.none() | st.builds(
        Credits,
        remaining=st.integers(0, 2**70),
        refill=st.none()
        | st.builds(
            CreditRefill,
            amount=BIG,
            interval=st.sampled_from(["daily", "monthly"]),
            day=st.none() | st.integers(1, 28),
        ),
    )
    named = st.builds(NamedRateLimit, name=TEXT, limit=BIG, window=WINDOWS)
    return KeyState(
        key_id=key_id,
        org_id=draw(st.sampled_from(["org-a", "org-b"]) | TEXT),
        name=draw(TEXT),
        type=key_type,
        environment=draw(st.sampled_from(get_args(Environment))),
        status=draw(st.sampled_from(get_args(Status))),
        scopes=tuple(draw(st.lists(SHORT, max_size=3))),
        allowed_origins=tuple(draw(st.lists(TEXT, max_size=2))),
        resource=draw(st.none() | TEXT),
        algorithm=draw(st.sampled_from(get_args(Algorithm))) if signing else None,
        public_key=draw(st.sampled_from(PEMS)) if signing else None,
        secret_hash=None if signing else draw(digest),
        hint=draw(st.none() | TEXT),
        metadata=draw(st.dictionaries(TEXT, JSON_VALUE, max_size=3)),
        rate_limit=draw(st.none() | st.builds(RateLimit, limit=BIG, window=WINDOWS)),
        created_at=draw(INSTANT),
        updated_at=draw(INSTANT),
        expires_at=draw(st.none() | INSTANT),
        version=draw(st.integers(1, 2**40)),
        disabled_at=draw(st.none() | INSTANT),
        revoked_at=draw(st.none() | INSTANT),
        previous_secret_hash=draw(digest),
        previous_public_key=draw(st.sampled_from(PEMS))
        if signing and draw(st.booleans())
        else None,
        previous_valid_until=draw(st.none() | INSTANT),
        position=draw(st.integers(0, 2**62)),
        rate_limits=tuple(draw(st.lists(named, max_size=2))),
        credits=draw(credits),
        allowed_cidrs=tuple(draw(st.lists(CIDR, max_size=2))),
        identity_id=draw(st.none() | TEXT),
        credits_version=draw(st.integers(0, 2**40)),
        credits_period=draw(st.none() | SHORT),
        expiry_warnings=frozenset(draw(st.lists(st.tuples(SHORT, INSTANT), max_size=2))),
    )


@st.composite
def chunks_of_states(draw: st.DrawFn) -> list[KeyState]:
    count = draw(st.integers(0, 6))
    return [draw(key_states(f"key_{number}")) for number in range(count)]


def _same(state: KeyState, other: KeyState) -> None:
    """Equal field by field (instants as instants: an offset may come back as UTC)."""
    for field in state.__dataclass_fields__:
        assert getattr(other, field) == getattr(state, field), field


@settings(max_examples=150, deadline=None)
@given(chunks_of_states())
def test_any_states_round_trip_through_a_chunk(states: list[KeyState]) -> None:
    body = encode_chunk(states)
    decoded = {state.key_id: state for state in chunk_states(decode_chunk(body))}
    assert sorted(decoded) == sorted(state.key_id for state in states)
    assert sorted(chunk_key_ids(body)) == sorted(decoded)
    for state in states:
        _same(state, decoded[state.key_id])


def _entry_or_failure(state: KeyState) -> IndexEntry | None:
    try:
        return entry_from_state(state)
    except ValueError:  # a secret hash that is not hex: the index sets the key aside
        return None


@settings(max_examples=150, deadline=None)
@given(chunks_of_states())
def test_the_index_builds_from_a_chunk_what_it_builds_from_the_states(
    states: list[KeyState],
) -> None:
    expected = {state.key_id: _entry_or_failure(state) for state in states}
    by_id: dict[str, IndexEntry] = {}
    by_hash: dict[bytes, IndexEntry] = {}
    if None in expected.values():
        # A key the fold refuses makes a snapshot that is refused: the log is folded.
        with pytest.raises(ValueError):
            load_chunk(decode_chunk(encode_chunk(states)), Interner(), by_id, by_hash)
        return
    load_chunk(decode_chunk(encode_chunk(states)), Interner(), by_id, by_hash)
    assert by_id.keys() == expected.keys()
    for key_id, entry in by_id.items():
        want = expected[key_id]
        assert want is not None
        for name in IndexEntry.FIELDS:
            if name == "signer":
                got = entry.signer
                assert (got and (got.algorithm, got.pem, got.previous_pem)) == (
                    want.signer
                    and (want.signer.algorithm, want.signer.pem, want.signer.previous_pem)
                )
            else:
                assert getattr(entry, name) == getattr(want, name), name
        for digest in (want.secret_hash, want.previous_hash):
            if digest is not None:
                assert digest in by_hash


def _sample() -> list[KeyState]:
    """A plain key, one with a previous secret, one with a lone surrogate in its name."""
    return [
        bench_state(0),
        bench_state(2),
        bench_state(1).with_changes(name="lone \ud800 surrogate"),
    ]


def test_a_truncated_chunk_is_refused_whole() -> None:
    body = encode_chunk(_sample())
    assert len(list(chunk_states(decode_chunk(body)))) == 3
    for cut in range(len(body)):
        with pytest.raises(SnapshotRefused):
            decode_chunk(body[:cut])
    with pytest.raises(SnapshotRefused):
        decode_chunk(body + b"\x00")


def test_a_chunk_of_another_layout_is_refused() -> None:
    # Format 1: a JSON array of state rows.
    old = json.dumps([state_row(state) for state in _sample()]).encode()
    for body in (old, msgspec.msgpack.encode([1, []]), msgspec.msgpack.encode({"a": 1}), b""):
        with pytest.raises(SnapshotRefused, match="format"):
            decode_chunk(body)
        with pytest.raises(SnapshotRefused):
            chunk_key_ids(body)


def _altered(body: bytes, **changes: Any) -> bytes:
    chunk = decode_chunk(body)
    return msgspec.msgpack.encode(msgspec.structs.replace(chunk, **changes))


def test_a_chunk_that_does_not_add_up_is_refused() -> None:
    body = encode_chunk(_sample())
    chunk = decode_chunk(body)
    assert chunk.format == CHUNK_FORMAT
    with pytest.raises(SnapshotRefused, match="one value per key"):
        decode_chunk(_altered(body, names=chunk.names[:-1]))
    with pytest.raises(SnapshotRefused, match="extras"):
        decode_chunk(_altered(body, extras=chunk.extras * 2))
    with pytest.raises(SnapshotRefused):  # a column of the wrong type
        decode_chunk(_altered(body, version=["2"] * len(chunk.version)))
    with pytest.raises(SnapshotRefused):  # a place before the start of its table
        decode_chunk(_altered(body, scopes=[-1] * len(chunk.scopes)))
    # An org number past its table: the states and the index both refuse it.
    damaged = decode_chunk(_altered(body, org=[5] * len(chunk.org)))
    with pytest.raises(SnapshotRefused):
        list(chunk_states(damaged))
    with pytest.raises(IndexError):
        load_chunk(damaged, Interner(), {}, {})
    cold = cold_columns(chunk)
    short_cold = msgspec.Raw(msgspec.msgpack.encode(msgspec.structs.replace(cold, hint=[])))
    with pytest.raises(SnapshotRefused, match="one value per key"):
        list(chunk_states(decode_chunk(_altered(body, cold=short_cold))))


def test_unchanged_keys_carried_over_are_the_keys_added() -> None:
    states = _sample()
    body = encode_chunk(states)
    chunk = decode_chunk(body)
    cold = cold_columns(chunk)
    builder = ChunkBuilder()
    for row in range(len(chunk.key_ids)):
        record = next((r for r in chunk.extras if r.row == row), None)
        builder.carry(chunk, cold, row, record)
    for row in chunk.odd_states:
        builder.carry_odd(row)
    carried = {state.key_id: state for state in chunk_states(decode_chunk(builder.body()))}
    assert carried == {state.key_id: state for state in states}
