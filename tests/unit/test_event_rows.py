"""Which rows of the log a reader shows, and what a command on an unfoldable key answers."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from events.codec import canonical_json
from service.store.event_rows import (
    UnfoldableStream,
    envelope_from_row,
    readable_envelope,
    storable_stream,
)

SECRET = "sk_live_" + "AbCdEf0123456789" * 3


def row(**changes: Any) -> dict[str, Any]:
    """An ``events`` row as asyncpg returns it (``actor``/``data`` as JSON text)."""
    data = {
        "name": "k",
        "type": "secret",
        "environment": "live",
        "secret_hash": "ab" * 32,
        "metadata": {},
    }
    base = {
        "position": 7,
        "event_id": uuid.uuid4(),
        "event_type": "KeyGenerated",
        "schema_version": 1,
        "org_id": "acme",
        "key_id": "key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P",
        "stream_version": 1,
        "occurred_at": datetime(2026, 1, 1, tzinfo=UTC),
        "actor": canonical_json({"id": "svc"}),
        "data": canonical_json(data),
        "hash": "0" * 64,
    }
    return base | changes


def test_a_row_the_api_writes_is_readable() -> None:
    assert readable_envelope(row()).data["name"] == "k"


@pytest.mark.parametrize(
    "changes",
    [
        {"actor": '"svc"'},
        {"actor": "[1]"},
        {"actor": "{}"},
        {"data": "[1, 2]"},
        {"data": "null"},
        {"data": json.dumps(SECRET)},
        {"event_type": "KeyTeleported"},
        {"data": canonical_json({"name": "no type"})},
        {"data": json.dumps({"name": "\ud800", "type": "secret", "environment": "live"})},
        {"actor": json.dumps({"id": "\udfff"})},
        {"data": canonical_json({"name": "k", "type": "secret", "environment": "x"})},
    ],
)
def test_rows_the_api_could_not_have_written_are_unreadable(changes: dict[str, Any]) -> None:
    with pytest.raises(Exception):  # noqa: B017 - whatever the row makes decoding raise
        readable_envelope(row(**changes))


def test_nul_is_shown_but_no_command_builds_on_it() -> None:
    data = canonical_json({"name": "a\x00b", "type": "secret", "environment": "live"})
    envelope = readable_envelope(row(data=data))
    with pytest.raises(UnfoldableStream) as caught:
        storable_stream([readable_envelope(row()), envelope])
    assert caught.value.position == 7
    nested = canonical_json(
        {"name": "k", "type": "secret", "environment": "live", "metadata": {"k": ["\x00"]}}
    )
    with pytest.raises(UnfoldableStream):
        storable_stream([envelope_from_row(row(data=nested))])
    storable_stream([readable_envelope(row())])  # nothing to refuse


def test_the_refusal_is_409_for_its_org_and_404_for_any_other() -> None:
    stopped = UnfoldableStream("key_1", "acme", 12, f"Key{SECRET}\x1b")
    mine = stopped.refusal("acme")
    assert mine.code == "key_quarantined"
    assert mine.details["position"] == 12
    assert SECRET not in json.dumps(mine.details) and "\x1b" not in mine.details["event_type"]
    assert stopped.refusal("other").code == "key_not_found"
