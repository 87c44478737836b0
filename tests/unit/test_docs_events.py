"""docs/events.md cannot drift: its example envelope, hash recipe and field tables are checked.

The example envelope must decode with the ``events`` package, its hash must
follow from the documented previous hash both by ``events.chain_hash`` and by
the page's standard-library recipe, and every event type's table must list
exactly the fields of its model.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from events import EVENT_TYPES, Actor, Envelope, canonical_json, chain_hash, decode, envelope_body

DOC = Path(__file__).resolve().parents[2] / "docs" / "events.md"
_BLOCK = re.compile(r"<!-- doc-test: ([a-z0-9-]+) -->\n```[a-z]*\n(.*?)```", re.S)
_ENVELOPE_ONLY = {"key_id", "org_id", "occurred_at"}


def _doc() -> str:
    return DOC.read_text(encoding="utf-8")


def _blocks() -> dict[str, str]:
    return dict(_BLOCK.findall(_doc()))


def _example() -> tuple[dict[str, Any], str]:
    blocks = _blocks()
    return json.loads(blocks["envelope"]), blocks["previous-hash"].strip()


def _recipe() -> Any:
    """The page's ``event_hash``, defined by running its block (without the usage line)."""
    source = _blocks()["recompute"].split("\n# envelope =", 1)[0]
    namespace: dict[str, Any] = {}
    exec(compile(source, "docs/events.md:recompute", "exec"), namespace)
    return namespace["event_hash"]


def test_the_example_envelope_decodes() -> None:
    document, _ = _example()
    envelope, event = decode(json.dumps(document, ensure_ascii=False).encode())
    assert envelope.event_type == type(event).event_type
    assert envelope.position == document["position"]


def test_the_example_hash_follows_from_the_previous_one() -> None:
    document, previous = _example()
    envelope, _ = decode(json.dumps(document).encode())
    assert canonical_json(envelope_body(envelope)) == _blocks()["canonical"].strip()
    assert chain_hash(previous, envelope_body(envelope)) == document["hash"]


def test_the_documented_recipe_computes_the_same_hash() -> None:
    document, previous = _example()
    assert _recipe()(previous, document) == document["hash"]


@pytest.mark.parametrize(
    "tampering",
    [
        {"position": 1043},
        {"occurred_at": "2026-01-15T09:30:00.123457Z"},
        {"data": {"name": "Bot fur Auftrage", "previous_name": "Trading Bot"}},
        {"actor": {"id": "cli:admin", "on_behalf_of": None, "request_id": None}},
    ],
    ids=["position", "occurred_at", "data", "actor"],
)
def test_a_changed_envelope_does_not_hash_the_same(tampering: dict[str, Any]) -> None:
    document, previous = _example()
    assert _recipe()(previous, document | tampering) != document["hash"]
    assert _recipe()("0" * 64, document) != document["hash"]


def _documented_fields(event_type: str) -> set[str]:
    section = _doc().split(f"### `{event_type}`", 1)[1].split("\n### ", 1)[0].split("\n## ", 1)[0]
    table = section.split("| field | type | meaning |", 1)[1]
    return set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M))


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_every_event_type_lists_exactly_its_fields(event_type: str) -> None:
    model = EVENT_TYPES[event_type]
    assert _documented_fields(event_type) == set(model.model_fields) - _ENVELOPE_ONLY


def test_the_envelope_table_lists_exactly_the_envelope_fields() -> None:
    section = _doc().split("## The envelope", 1)[1].split("\n## ", 1)[0]
    table = section.split("| field | type | meaning |", 1)[1]
    names = set(re.findall(r"^\| `([a-z_.]+)` \|", table, re.M))
    actor = {f"actor.{name}" for name in Actor.model_fields}
    assert names == (set(Envelope.model_fields) - {"actor"}) | actor
