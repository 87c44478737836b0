"""A key's state as a JSON row: ``KeyState``'s fields in declaration order (``FIELDS``;
instants as ISO-8601, tuples as arrays, the rate limit as ``[limit, window]``).

Snapshots store keys in MessagePack columns (``service.store.snapshot_chunks``);
a JSON row (ASCII, so that any text the log holds survives, lone surrogates
included) is how they spell the rare state MessagePack cannot carry, and the
last state of each key set aside in a snapshot's header.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from operator import attrgetter
from typing import Any

from events.models import Credits, NamedRateLimit, RateLimit
from service.domain.state import KeyState


class SnapshotRefused(ValueError):
    """A snapshot this replica must not start from; the message says why (no data)."""


FIELDS: tuple[str, ...] = tuple(f.name for f in fields(KeyState))
COLUMN: dict[str, int] = {name: index for index, name in enumerate(FIELDS)}
_INSTANTS = tuple(
    COLUMN[name]
    for name in (
        "created_at",
        "updated_at",
        "expires_at",
        "disabled_at",
        "revoked_at",
        "previous_valid_until",
    )
)
_TUPLES = (COLUMN["scopes"], COLUMN["allowed_origins"], COLUMN["allowed_cidrs"])
_RATE_LIMIT = COLUMN["rate_limit"]
_RATE_LIMITS = COLUMN["rate_limits"]
_CREDITS = COLUMN["credits"]
_EXPIRY_WARNINGS = COLUMN["expiry_warnings"]
_values = attrgetter(*FIELDS)

Row = list[Any]


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, str | int | dict):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple):
        return [_encode(item) for item in value]
    if isinstance(value, RateLimit):
        return [value.limit, value.window]
    if isinstance(value, NamedRateLimit | Credits):
        return value.model_dump(mode="json")
    if isinstance(value, frozenset):  # expiry_warnings: (lead, expires_at) pairs
        return sorted([lead, at.isoformat()] for lead, at in value)
    raise TypeError(f"a key state field of type {type(value).__name__} has no snapshot encoding")


def state_row(key: KeyState) -> Row:
    """``key`` as a JSON row (``FIELDS`` order)."""
    return [_encode(value) for value in _values(key)]


def state_from_row(row: Row) -> KeyState:
    """The state a JSON row holds (``SnapshotRefused`` if it is not one)."""
    if not isinstance(row, list) or len(row) != len(FIELDS):
        raise SnapshotRefused("a row does not have the state's fields")
    values = list(row)
    for column in _INSTANTS:
        if values[column] is not None:
            values[column] = datetime.fromisoformat(values[column])
    for column in _TUPLES:
        values[column] = tuple(values[column])
    limit = values[_RATE_LIMIT]
    if limit is not None:
        values[_RATE_LIMIT] = RateLimit(limit=limit[0], window=limit[1])
    values[_RATE_LIMITS] = _named_limits(values[_RATE_LIMITS])
    values[_CREDITS] = _credits(values[_CREDITS])
    values[_EXPIRY_WARNINGS] = frozenset(
        (lead, datetime.fromisoformat(at)) for lead, at in values[_EXPIRY_WARNINGS]
    )
    return KeyState(*values)


def _named_limits(column: list[dict[str, Any]]) -> tuple[NamedRateLimit, ...]:
    return tuple(NamedRateLimit.model_validate(limit) for limit in column)


def _credits(column: dict[str, Any] | None) -> Credits | None:
    return None if column is None else Credits.model_validate(column)
