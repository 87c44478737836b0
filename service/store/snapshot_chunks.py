"""The body of a registry snapshot chunk: a few thousand keys' states, column by column.

A chunk is one MessagePack array (``Chunk``, read and written by msgspec,
which checks every column's type as it decodes):

- ``format`` (``CHUNK_FORMAT``) first, so that a body of any other layout
  is refused rather than misread;
- the columns a replica's verification index reads, one list per field,
  with org ids, (type, environment, status) triples and scope sets written
  once per chunk in a table and referred to by number, secret hashes as
  their 32 raw bytes, instants as MessagePack timestamps;
- ``extras``: one record per key that has any of what most keys lack
  (origins, resource, metadata, rate limits, credits, IP allowlist,
  identity, a previous secret, signing material), with its row number;
- ``cold``: the fields only read models want (hint, created/updated/
  disabled/revoked instants, position, credits period, expiry warnings),
  encoded on their own and carried as raw bytes: the index never decodes
  them, a ``key_views`` rebuild and the snapshot writer do.

Metadata, named rate limits and credits are kept as the JSON the log holds
them in (JSON text round-trips whatever the log accepted). A secret hash that
is not 64 lowercase hex digits (only a hand-written event makes one) is kept
as text in ``extras``. A key MessagePack cannot carry at all (text that is not
UTF-8, such as a lone surrogate; an integer past 64 bits) is kept whole as an
ASCII JSON row in ``odd_states`` (``service.store.snapshot_rows``).

``decode_chunk`` never returns part of a chunk: a body that does not decode
whole, or whose columns disagree in length, raises ``SnapshotRefused``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime
from typing import Annotated, Any

import msgspec

from events.models import Credits, NamedRateLimit, RateLimit
from events.vocabulary import Algorithm, Environment, KeyType, RateWindow, Status
from service.domain.state import KeyState
from service.store.snapshot_rows import SnapshotRefused, state_from_row

# The layout below; a body that starts with another number is refused.
CHUNK_FORMAT = 2

Kind = tuple[KeyType, Environment, Status]
# A place in one of the chunk's tables (a negative one would read from its end).
Place = Annotated[int, msgspec.Meta(ge=0)]


class KeyExtrasRecord(msgspec.Struct, array_like=True, frozen=True):
    """What a key has beyond the common columns (row: its place in the chunk)."""

    row: int
    allowed_origins: tuple[str, ...]
    resource: str | None
    metadata: str | None  # JSON object; None when empty
    rate_limit: tuple[int, RateWindow] | None
    previous_secret_hash: bytes | None  # raw 32-byte HMAC
    previous_valid_until: datetime | None
    algorithm: Algorithm | None
    public_key: str | None
    previous_public_key: str | None
    rate_limits: str | None  # JSON array of named limits; None when none
    credits: str | None  # JSON object
    credits_version: int
    allowed_cidrs: tuple[str, ...]
    identity_id: str | None
    # Secret hashes that are not 64 hex digits, as text (their other column is None).
    odd_secret_hash: str | None
    odd_previous_secret_hash: str | None


class ColdColumns(msgspec.Struct, array_like=True, frozen=True):
    """The fields a verification index does not keep, one list per field."""

    hint: list[str | None]
    created_at: list[datetime]
    updated_at: list[datetime]
    disabled_at: list[datetime | None]
    revoked_at: list[datetime | None]
    position: list[int]
    credits_period: list[str | None]
    expiry_warnings: list[list[tuple[str, datetime]]]


class Chunk(msgspec.Struct, array_like=True, frozen=True):
    """One chunk as decoded: what the index reads, and the read models' part undecoded."""

    format: int
    key_ids: list[str]
    # Keys MessagePack cannot carry (a lone surrogate, an integer past 64 bits), as JSON.
    odd_states: list[str]
    orgs: list[str]  # distinct org ids of the chunk
    org: list[Place]  # per key: its org's place in ``orgs``
    names: list[str]
    kinds: list[Kind]
    kind: list[Place]
    scope_sets: list[tuple[str, ...]]
    scopes: list[Place]
    expires_at: list[datetime | None]
    secret_hash: list[bytes | None]  # raw 32-byte HMACs
    version: list[int]
    extras: list[KeyExtrasRecord]
    cold: msgspec.Raw  # ColdColumns


class _Format(msgspec.Struct, array_like=True):
    format: int


class _KeyIds(msgspec.Struct, array_like=True):
    format: int
    key_ids: list[str]
    odd_states: list[str]


_chunk_decoder = msgspec.msgpack.Decoder(Chunk)
_cold_decoder = msgspec.msgpack.Decoder(ColdColumns)
_format_decoder = msgspec.msgpack.Decoder(_Format)
_key_ids_decoder = msgspec.msgpack.Decoder(_KeyIds)


def _check_format(body: bytes) -> None:
    try:
        found = _format_decoder.decode(body).format
    except (msgspec.DecodeError, msgspec.ValidationError):
        found = None
    if found != CHUNK_FORMAT:
        raise SnapshotRefused(f"a chunk is not of format {CHUNK_FORMAT}")


def decode_chunk(body: bytes) -> Chunk:
    """The chunk ``body`` holds, whole (``SnapshotRefused`` if it is not one)."""
    _check_format(body)
    try:
        chunk = _chunk_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise SnapshotRefused("a chunk does not decode") from None
    rows = len(chunk.key_ids)
    columns = (chunk.org, chunk.names, chunk.kind, chunk.scopes, chunk.expires_at)
    if any(len(column) != rows for column in (*columns, chunk.secret_hash, chunk.version)):
        raise SnapshotRefused("a chunk's columns do not have one value per key")
    extra_rows = [record.row for record in chunk.extras]
    if extra_rows and not (
        extra_rows[0] >= 0 and extra_rows[-1] < rows and extra_rows == sorted(set(extra_rows))
    ):
        raise SnapshotRefused("a chunk's extras do not belong to its keys")
    return chunk


def chunk_key_ids(body: bytes) -> list[str]:
    """The key ids a chunk body holds, without decoding the rest."""
    _check_format(body)
    try:
        decoded = _key_ids_decoder.decode(body)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise SnapshotRefused("a chunk does not decode") from None
    return decoded.key_ids + [state.key_id for state in odd_states(decoded.odd_states)]


def odd_states(rows: list[str]) -> list[KeyState]:
    """The states a chunk holds as JSON rows (``SnapshotRefused`` if they are not states)."""
    try:
        return [state_from_row(json.loads(row)) for row in rows]
    except SnapshotRefused:
        raise
    except Exception as exc:  # not JSON, or a field that does not make a state
        raise SnapshotRefused(f"a chunk does not hold states ({type(exc).__name__})") from None


def cold_columns(chunk: Chunk) -> ColdColumns:
    """The read models' fields of ``chunk`` (``SnapshotRefused`` if they do not decode)."""
    try:
        cold = _cold_decoder.decode(chunk.cold)
    except (msgspec.DecodeError, msgspec.ValidationError):
        raise SnapshotRefused("a chunk does not decode") from None
    rows = len(chunk.key_ids)
    if any(len(column) != rows for column in msgspec.structs.astuple(cold)):
        raise SnapshotRefused("a chunk's columns do not have one value per key")
    return cold


def rate_limits_of(text: str | None) -> tuple[NamedRateLimit, ...]:
    """An extras record's ``rate_limits`` as the state holds them."""
    if text is None:
        return ()
    return tuple(NamedRateLimit.model_validate(limit) for limit in json.loads(text))


def credits_of(text: str | None) -> Credits | None:
    """An extras record's ``credits`` as the state holds them."""
    return None if text is None else Credits.model_validate_json(text)


def metadata_of(text: str | None) -> dict[str, Any]:
    """An extras record's ``metadata`` as the state holds it."""
    if text is None:
        return {}
    metadata = json.loads(text)
    if not isinstance(metadata, dict):
        raise SnapshotRefused("a chunk's metadata is not an object")
    return metadata


# What a key without extras has of them.
NO_RECORD = KeyExtrasRecord(
    -1, (), None, None, None, None, None, None, None, None, None, None, 0, (), None, None, None
)


def extras_by_row(chunk: Chunk) -> dict[int, KeyExtrasRecord]:
    """The chunk's extras records by the row of their key."""
    return {record.row: record for record in chunk.extras}


def state_at(chunk: Chunk, cold: ColdColumns, row: int, x: KeyExtrasRecord) -> KeyState:
    """The whole state of the key in ``row`` (``x``: its extras record, or ``NO_RECORD``)."""
    key_type, environment, status = chunk.kinds[chunk.kind[row]]
    digest, previous, limit = chunk.secret_hash[row], x.previous_secret_hash, x.rate_limit
    return KeyState(
        key_id=chunk.key_ids[row],
        org_id=chunk.orgs[chunk.org[row]],
        name=chunk.names[row],
        type=key_type,
        environment=environment,
        status=status,
        scopes=chunk.scope_sets[chunk.scopes[row]],
        allowed_origins=x.allowed_origins,
        resource=x.resource,
        algorithm=x.algorithm,
        public_key=x.public_key,
        secret_hash=digest.hex() if digest is not None else x.odd_secret_hash,
        hint=cold.hint[row],
        metadata=metadata_of(x.metadata),
        rate_limit=RateLimit(limit=limit[0], window=limit[1]) if limit else None,
        created_at=cold.created_at[row],
        updated_at=cold.updated_at[row],
        expires_at=chunk.expires_at[row],
        version=chunk.version[row],
        disabled_at=cold.disabled_at[row],
        revoked_at=cold.revoked_at[row],
        previous_secret_hash=previous.hex() if previous is not None else x.odd_previous_secret_hash,
        previous_public_key=x.previous_public_key,
        previous_valid_until=x.previous_valid_until,
        position=cold.position[row],
        rate_limits=rate_limits_of(x.rate_limits),
        credits=credits_of(x.credits),
        allowed_cidrs=x.allowed_cidrs,
        identity_id=x.identity_id,
        credits_version=x.credits_version,
        credits_period=cold.credits_period[row],
        expiry_warnings=frozenset(cold.expiry_warnings[row]),
    )


def chunk_states(chunk: Chunk) -> Iterator[KeyState]:
    """Every key's whole state, one at a time (``SnapshotRefused``, possibly part-way,
    if the chunk does not hold states: the caller drops what it took)."""
    cold = cold_columns(chunk)
    extras = extras_by_row(chunk)
    try:
        for row in range(len(chunk.key_ids)):
            yield state_at(chunk, cold, row, extras.get(row, NO_RECORD))
    except Exception as exc:  # a number out of its table, a model that does not validate
        raise SnapshotRefused(f"a chunk does not hold states ({type(exc).__name__})") from None
    yield from odd_states(chunk.odd_states)
