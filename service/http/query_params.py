"""Query strings of the read endpoints, parsed strictly (docs/api.md#reads).

Every refusal is a 422 with a stable code: ``invalid_limit``,
``invalid_cursor``, ``invalid_min_position``, ``invalid_timestamp``,
``invalid_time_range``, ``unknown_status``, ``unknown_event_type``, and
``validation_error`` for an unknown parameter or a malformed value.
Numbers are ASCII digits (at most 18), instants stay within years 1-9999 in
UTC, identifiers are matched whole: the rules of ``service.domain.vocabulary``.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import TypeVar

from multidict import MultiMapping

from events.models import EVENT_TYPES
from events.vocabulary import ENVIRONMENTS, KEY_TYPES, STATUSES
from projections.key_views import KeyFilter
from service.domain.ids import is_key_id
from service.domain.orgs import is_org_id
from service.domain.vocabulary import ACTOR_ID, ascii_integer, identity_id, parse_instant
from service.errors import ErrorCode, KeyledgerError

KEY_LIST_PARAMS = (
    "status",
    "type",
    "environment",
    "identity",
    "identity_id",
    "limit",
    "cursor",
    "min_position",
)
AUDIT_PARAMS = (
    *("org_id", "key_id", "event_type", "actor", "since", "until", "after", "limit"),
    "min_position",
)


def _invalid(code: ErrorCode, name: str, message: str) -> KeyledgerError:
    return KeyledgerError(code, message, [{"loc": ["query", name], "msg": message}])


def reject_unknown(query: MultiMapping[str], allowed: Collection[str]) -> None:
    """Refuse unknown or repeated parameters (a typo must not be silently ignored)."""
    for name in set(query.keys()):
        if name not in allowed:
            raise _invalid("validation_error", name, f"unknown query parameter {name!r}")
        reject_repeated(query, (name,))


def reject_repeated(query: MultiMapping[str], names: Collection[str]) -> None:
    """Refuse any of ``names`` given more than once (first-wins would hide the others)."""
    for name in names:
        if len(query.getall(name, ())) > 1:
            raise _invalid("validation_error", name, f"{name} is given more than once")


def limit_of(query: Mapping[str, str], *, default: int, maximum: int) -> int:
    """``limit``: an integer from 1 to ``maximum``."""
    raw = query.get("limit")
    if raw is None:
        return default
    value = ascii_integer(raw)
    if value is None or not 1 <= value <= maximum:
        raise _invalid("invalid_limit", "limit", f"limit must be an integer from 1 to {maximum}")
    return value


def attempt_id_of(query: Mapping[str, str]) -> int | None:
    """``before`` of a delivery listing: a delivery attempt's ``id`` (its ``next_before``)."""
    raw = query.get("before")
    if raw is None:
        return None
    value = ascii_integer(raw)
    if value is None:
        raise _invalid(
            "invalid_cursor",
            "before",
            "before must be a delivery attempt id (the next_before of the previous page)",
        )
    return value


def position_of(query: Mapping[str, str], name: str, code: ErrorCode) -> int | None:
    """A non-negative log position (``min_position``, ``after``), or None when absent."""
    raw = query.get(name)
    if raw is None:
        return None
    value = ascii_integer(raw)
    if value is None:
        raise _invalid(code, name, f"{name} must be a log position: 1-18 digits")
    return value


def min_position_of(query: Mapping[str, str]) -> int | None:
    """``min_position``: the consistency token a command returned."""
    return position_of(query, "min_position", "invalid_min_position")


Choice = TypeVar("Choice", bound=str)


def choice_of(
    query: Mapping[str, str],
    name: str,
    choices: Sequence[Choice],
    code: ErrorCode = "validation_error",
) -> Choice | None:
    """A value from a closed set, or None when absent."""
    raw = query.get(name)
    if raw is None:
        return None
    for choice in choices:
        if raw == choice:
            return choice
    raise _invalid(code, name, f"{name} must be one of {', '.join(choices)}")


def timestamp_of(
    query: Mapping[str, str], name: str, *, ends_allowed: bool = False
) -> datetime | None:
    """An ISO-8601 instant with a timezone (within years 1-9999 in UTC), or None when absent.

    ``ends_allowed``: 0001-01-01T00:00:00Z and 9999-12-31T23:59:59.999999Z
    themselves are accepted (``parse_instant``).
    """
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return parse_instant(raw, ends_allowed=ends_allowed)
    except ValueError as exc:
        raise _invalid(
            "invalid_timestamp",
            name,
            f"{name} must be ISO-8601 with a timezone, within years 1-9999 in UTC, e.g. …Z"
            " (write a + offset as %2B)",
        ) from exc


def key_filter_of(query: Mapping[str, str]) -> KeyFilter:
    """The filters of the key list."""
    return KeyFilter(
        status=choice_of(query, "status", STATUSES, "unknown_status"),
        type=choice_of(query, "type", KEY_TYPES),
        environment=choice_of(query, "environment", ENVIRONMENTS),
        identity_id=identity_of(query),
    )


def identity_of(query: Mapping[str, str]) -> str | None:
    """``identity`` (or its other name ``identity_id``): one identity's keys only."""
    given = {name: query[name] for name in ("identity", "identity_id") if name in query}
    if len(set(given.values())) > 1:
        raise _invalid("validation_error", "identity", "give identity or identity_id, not both")
    for name, raw in given.items():
        try:
            return identity_id(raw) if len(raw) <= 128 else identity_id("")
        except ValueError as exc:
            raise _invalid(
                "validation_error", name, f"{name} is 1-128 characters, no control characters"
            ) from exc
    return None


def audit_org_of(query: Mapping[str, str]) -> str | None:
    """``org_id`` of the audit query (the reserved ``_system`` org included)."""
    raw = query.get("org_id")
    if raw is not None and not is_org_id(raw):
        raise _invalid("validation_error", "org_id", "org_id is not a valid org id")
    return raw


def audit_key_of(query: Mapping[str, str]) -> str | None:
    """``key_id`` of the audit query."""
    raw = query.get("key_id")
    if raw is not None and not is_key_id(raw):
        raise _invalid("validation_error", "key_id", "key_id must be key_ + a 26-character ULID")
    return raw


def audit_event_type_of(query: Mapping[str, str]) -> str | None:
    """``event_type`` of the audit query: one of the known event types."""
    return choice_of(query, "event_type", tuple(EVENT_TYPES), "unknown_event_type")


def audit_actor_of(query: Mapping[str, str]) -> str | None:
    """``actor`` of the audit query: a service key id or another actor id."""
    raw = query.get("actor")
    if raw is not None and not ACTOR_ID.matches(raw):
        raise _invalid("validation_error", "actor", "actor must be 1-255 printable characters")
    return raw


# -- the key list's opaque cursor ------------------------------------------------


def _filter_tag(where: KeyFilter) -> str:
    tag = f"{where.status or ''}|{where.type or ''}|{where.environment or ''}"
    return tag if where.identity_id is None else f"{tag}|{where.identity_id}"


def encode_key_cursor(org_id: str, where: KeyFilter, last_key_id: str) -> str:
    """A cursor for the page after ``last_key_id``; it is bound to the org and filters."""
    payload = json.dumps({"o": org_id, "f": _filter_tag(where), "k": last_key_id})
    return base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")


def decode_key_cursor(raw: str | None, org_id: str, where: KeyFilter) -> str | None:
    """The key id a cursor continues after; 422 ``invalid_cursor`` if it is not ours."""
    if raw is None:
        return None
    message = "cursor is not a next_cursor of this list (same org and filters)"
    try:
        payload = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError, RecursionError) as exc:
        # RecursionError: a cursor of nested brackets, deeper than the parser takes.
        raise _invalid("invalid_cursor", "cursor", message) from exc
    if (
        not isinstance(payload, dict)
        or payload.get("o") != org_id
        or payload.get("f") != _filter_tag(where)
    ):
        raise _invalid("invalid_cursor", "cursor", message)
    key_id = payload.get("k")
    if not isinstance(key_id, str) or not is_key_id(key_id):
        raise _invalid("invalid_cursor", "cursor", message)
    return key_id
