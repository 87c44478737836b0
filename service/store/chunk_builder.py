"""Putting a registry snapshot chunk together (its layout: ``service.store.snapshot_chunks``).

The snapshot writer adds each key either as a state (``add``: born or changed
since the last snapshot) or straight from the chunk it was read from
(``carry``: unchanged, its values copied column by column without making a
state), and lets the event loop run between keys; ``body`` then encodes the
chunk in one call to msgspec.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import msgspec

from service.domain.state import KeyState
from service.store.snapshot_chunks import (
    CHUNK_FORMAT,
    Chunk,
    ColdColumns,
    KeyExtrasRecord,
)
from service.store.snapshot_rows import state_row

_encoder = msgspec.msgpack.Encoder()


def _packed(digest: str | None) -> tuple[bytes | None, str | None]:
    """A secret hash as (raw bytes, None), or (None, text) when it is not 64 lowercase
    hex digits (only a hand-written event makes one)."""
    if digest is None:
        return None, None
    try:
        raw = bytes.fromhex(digest)
    except ValueError:
        return None, digest
    return (raw, None) if len(raw) == 32 and raw.hex() == digest else (None, digest)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _extras(row: int, state: KeyState, odd_hash: str | None) -> KeyExtrasRecord | None:
    limit = state.rate_limit
    has_extras = (
        state.allowed_origins
        or state.resource is not None
        or state.metadata
        or limit is not None
        or state.previous_secret_hash is not None
        or state.previous_valid_until is not None
        or state.algorithm is not None
        or state.public_key is not None
        or state.previous_public_key is not None
        or state.rate_limits
        or state.credits is not None
        or state.credits_version
        or state.allowed_cidrs
        or state.identity_id is not None
        or odd_hash is not None
    )
    if not has_extras:
        return None
    previous, odd_previous = _packed(state.previous_secret_hash)
    return KeyExtrasRecord(
        row=row,
        allowed_origins=tuple(state.allowed_origins),
        resource=state.resource,
        metadata=_json(state.metadata) if state.metadata else None,
        rate_limit=(limit.limit, limit.window) if limit is not None else None,
        previous_secret_hash=previous,
        previous_valid_until=state.previous_valid_until,
        algorithm=state.algorithm,
        public_key=state.public_key,
        previous_public_key=state.previous_public_key,
        rate_limits=(
            _json([named.model_dump(mode="json") for named in state.rate_limits])
            if state.rate_limits
            else None
        ),
        credits=_json(state.credits.model_dump(mode="json")) if state.credits else None,
        credits_version=state.credits_version,
        allowed_cidrs=tuple(state.allowed_cidrs),
        identity_id=state.identity_id,
        odd_secret_hash=odd_hash,
        odd_previous_secret_hash=odd_previous,
    )


def _numbered(numbers: dict[Any, int], table: list[Any], value: Any) -> int:
    """``value``'s place in ``table``, where it is added the first time."""
    number = numbers.get(value)
    if number is None:
        number = numbers[value] = len(table)
        table.append(value)
    return number


# What MessagePack cannot carry: text that is not UTF-8 (a lone surrogate: the log can
# hold one) and integers past 64 bits (the models accept any size).
_UNENCODABLE = (UnicodeEncodeError, OverflowError)


def _encodable(state: KeyState) -> bool:
    """Whether MessagePack can carry all of the state."""
    try:
        _encoder.encode(state_row(state))
    except _UNENCODABLE:
        return False
    return True


class ChunkBuilder:
    """A chunk being put together, key by key."""

    def __init__(self) -> None:
        self.hot = Chunk(
            format=CHUNK_FORMAT,
            key_ids=[],
            odd_states=[],
            orgs=[],
            org=[],
            names=[],
            kinds=[],
            kind=[],
            scope_sets=[],
            scopes=[],
            expires_at=[],
            secret_hash=[],
            version=[],
            extras=[],
            cold=msgspec.Raw(b""),  # encoded from ``self.cold`` by ``body``
        )
        self.cold = ColdColumns([], [], [], [], [], [], [], [])
        self._orgs: dict[str, int] = {}
        self._kinds: dict[Any, int] = {}
        self._scope_sets: dict[tuple[str, ...], int] = {}
        # Per row, the state it was added from (None: carried over, UTF-8 already).
        self._added: list[KeyState | None] = []

    def __len__(self) -> int:
        return len(self.hot.key_ids) + len(self.hot.odd_states)

    def add(self, state: KeyState) -> None:
        """Append ``state``."""
        hot, cold = self.hot, self.cold
        row = len(hot.key_ids)
        hot.key_ids.append(state.key_id)
        hot.org.append(_numbered(self._orgs, hot.orgs, state.org_id))
        hot.names.append(state.name)
        kind = (state.type, state.environment, state.status)
        hot.kind.append(_numbered(self._kinds, hot.kinds, kind))
        hot.scopes.append(_numbered(self._scope_sets, hot.scope_sets, tuple(state.scopes)))
        hot.expires_at.append(state.expires_at)
        digest, odd_hash = _packed(state.secret_hash)
        hot.secret_hash.append(digest)
        hot.version.append(state.version)
        record = _extras(row, state, odd_hash)
        if record is not None:
            hot.extras.append(record)
        cold.hint.append(state.hint)
        cold.created_at.append(state.created_at)
        cold.updated_at.append(state.updated_at)
        cold.disabled_at.append(state.disabled_at)
        cold.revoked_at.append(state.revoked_at)
        cold.position.append(state.position)
        cold.credits_period.append(state.credits_period)
        cold.expiry_warnings.append(list(state.expiry_warnings))
        self._added.append(state)

    def carry(
        self, source: Chunk, source_cold: ColdColumns, row: int, record: KeyExtrasRecord | None
    ) -> None:
        """Append the key in ``row`` of ``source`` as it is (``record``: its extras)."""
        hot, cold = self.hot, self.cold
        if record is not None:
            hot.extras.append(msgspec.structs.replace(record, row=len(hot.key_ids)))
        hot.key_ids.append(source.key_ids[row])
        hot.org.append(_numbered(self._orgs, hot.orgs, source.orgs[source.org[row]]))
        hot.names.append(source.names[row])
        hot.kind.append(_numbered(self._kinds, hot.kinds, source.kinds[source.kind[row]]))
        scopes = source.scope_sets[source.scopes[row]]
        hot.scopes.append(_numbered(self._scope_sets, hot.scope_sets, scopes))
        hot.expires_at.append(source.expires_at[row])
        hot.secret_hash.append(source.secret_hash[row])
        hot.version.append(source.version[row])
        cold.hint.append(source_cold.hint[row])
        cold.created_at.append(source_cold.created_at[row])
        cold.updated_at.append(source_cold.updated_at[row])
        cold.disabled_at.append(source_cold.disabled_at[row])
        cold.revoked_at.append(source_cold.revoked_at[row])
        cold.position.append(source_cold.position[row])
        cold.credits_period.append(source_cold.credits_period[row])
        cold.expiry_warnings.append(source_cold.expiry_warnings[row])
        self._added.append(None)

    def carry_odd(self, row: str) -> None:
        """Append a key kept as a JSON row (``Chunk.odd_states``) as it is."""
        self.hot.odd_states.append(row)

    def body(self) -> bytes:
        """The chunk body of the keys appended."""
        try:
            return self._encode()
        except _UNENCODABLE:
            # Those keys go in as ASCII JSON rows; all the others as usual.
            clean = ChunkBuilder()
            clean.hot.odd_states.extend(self.hot.odd_states)
            extras = {record.row: record for record in self.hot.extras}
            for row, state in enumerate(self._added):
                if state is None:
                    clean.carry(self.hot, self.cold, row, extras.get(row))
                elif _encodable(state):
                    clean.add(state)
                else:
                    clean.carry_odd(json.dumps(state_row(state), separators=(",", ":")))
            return clean._encode()

    def _encode(self) -> bytes:
        cold = msgspec.Raw(_encoder.encode(self.cold))
        return _encoder.encode(msgspec.structs.replace(self.hot, cold=cold))


def encode_chunk(states: Iterable[KeyState]) -> bytes:
    """``states`` as one chunk body."""
    builder = ChunkBuilder()
    for state in states:
        builder.add(state)
    return builder.body()
