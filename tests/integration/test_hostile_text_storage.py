"""(d) of the schema property: what the command schemas accept stores in PostgreSQL.

Events made from accepted hostile bodies go into ``jsonb``, ``json`` and
``text`` columns of a TEMP table on a real connection and read back equal.
Then the same hostile bodies go through the running API: each is refused
with a 4xx or commits, and a committed one is readable from the ``key_views``
projection and decodes from the log, so no accepted command can halt a reader.
"""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from events import decode
from events.codec import envelope_to_json
from service.http.schemas import (
    DisableKeyBody,
    GenerateKeyBody,
    RenameKeyBody,
    RevokeKeyBody,
    RotateKeyBody,
)
from tests.support import hostile
from tests.support.api import Api, new_org

STORAGE = settings(
    max_examples=120,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
THROUGH_THE_API = settings(
    max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
)


def _decimal_json(text: str) -> Any:
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


async def store_and_read_back(conn: asyncpg.Connection, bodies: list[tuple[type, Any]]) -> int:
    """Insert the events of every accepted body; the number of events stored."""
    await conn.execute(
        "CREATE TEMP TABLE IF NOT EXISTS hostile_events"
        " (doc jsonb NOT NULL, raw json NOT NULL, line text NOT NULL, name text, org text)"
    )
    stored = 0
    for model, body in bodies:
        parsed = hostile.parsed(model, body)
        if parsed is None:
            continue
        if model is GenerateKeyBody:
            events = hostile.generated("acme", parsed)
        else:
            events = hostile.changed("acme", model, parsed)
        for event in events:
            line = envelope_to_json(hostile.sealed(event))
            name = getattr(event, "name", None) or getattr(event, "reason", None)
            row = await conn.fetchrow(
                "INSERT INTO hostile_events"
                " VALUES ($1::text::jsonb, $1::text::json, $1::text, $2, $3)"
                " RETURNING doc::text AS doc, raw::text AS raw, line, name,"
                " doc -> 'data' ->> 'name' AS data_name",
                line,
                name,
                event.org_id,
            )
            assert row["raw"] == row["line"] == line
            # jsonb keeps numbers as decimals and prints 1e300 in full: compare values as
            # decimals (as floats, Python would set the exact integer against the binary float).
            assert _decimal_json(row["doc"]) == _decimal_json(line)
            assert row["name"] == name
            assert row["data_name"] == getattr(event, "name", None)
            stored += 1
    return stored


@STORAGE
@given(
    generate=hostile.generate_bodies,
    rename=hostile.rename_bodies,
    disable=hostile.disable_bodies,
    revoke=hostile.revoke_bodies,
    rotate=hostile.rotate_bodies,
    text=hostile.texts,
    metadata=hostile.metadata,
)
async def test_accepted_events_store_in_jsonb_json_and_text(
    pool: asyncpg.Pool,
    generate: dict[str, Any],
    rename: dict[str, Any],
    disable: dict[str, Any],
    revoke: dict[str, Any],
    rotate: dict[str, Any],
    text: str,
    metadata: dict[str, Any],
) -> None:
    async with pool.acquire() as conn:
        await store_and_read_back(
            conn,
            [
                (GenerateKeyBody, generate),
                (GenerateKeyBody, {"name": text, "type": "secret"}),
                (GenerateKeyBody, {"name": "k", "type": "secret", "metadata": metadata}),
                (RenameKeyBody, rename),
                (DisableKeyBody, disable),
                (DisableKeyBody, {"reason": text}),
                (RevokeKeyBody, revoke),
                (RotateKeyBody, rotate),
            ],
        )


def test_the_storage_property_meets_accepted_bodies() -> None:
    """Guard: the strategies above yield bodies the schemas accept, so events really get stored."""
    accepted: list[int] = []

    @settings(max_examples=100, database=None, deadline=None)
    @given(
        generate=hostile.generate_bodies,
        rename=hostile.rename_bodies,
        metadata=hostile.metadata,
    )
    def collect(generate: dict[str, Any], rename: dict[str, Any], metadata: dict[str, Any]) -> None:
        bodies = [
            (GenerateKeyBody, generate),
            (RenameKeyBody, rename),
            (GenerateKeyBody, {"name": "k", "type": "secret", "metadata": metadata}),
        ]
        accepted.append(sum(hostile.parsed(model, body) is not None for model, body in bodies))

    collect()
    assert sum(accepted) > 50


@THROUGH_THE_API
@given(body=hostile.generate_bodies, text=hostile.texts)
# Two surrogates that form a pair: JSON escapes that decode to one character (U+10FC00).
@example(body={"name": "\udbff\udc00", "type": "secret"}, text="\ud83d\ude00")
async def test_hostile_generate_bodies_through_the_api(
    api: Api, client: TestClient, body: dict[str, Any], text: str
) -> None:
    org = new_org()  # a fresh org per example: the active-key limit never interferes
    for candidate in (body, {"name": text, "type": "secret", "metadata": {text: text}}):
        response = await client.post(f"/v1/orgs/{org}/keys", json=candidate, headers=api.headers())
        answer = await response.json()
        assert response.status in (201, 400, 422), (response.status, answer)
        if response.status != 201:
            continue
        key_id, position = answer["key"]["id"], answer["position"]
        status, _, key = await api.get(f"/v1/orgs/{org}/keys/{key_id}?min_position={position}")
        # What the server received: adjacent surrogates in ``candidate`` arrive as one
        # astral character once JSON-encoded, which is exactly what it should store.
        sent = json.loads(json.dumps(candidate))
        assert status == 200 and key["name"] == sent["name"]
        status, _, history = await api.get(f"/v1/orgs/{org}/keys/{key_id}/events")
        assert status == 200
        for envelope in history["data"]:
            decode(json.dumps(envelope, ensure_ascii=False).encode())


POISON = [
    ("{org}", {"name": "nul\x00", "type": "secret"}),
    ("{org}", {"name": "k", "type": "secret", "metadata": {"k": "\x1b"}}),
    ("{org}", {"name": "k", "type": "secret", "metadata": {"deep": hostile.nest_plain(250)}}),
    ("{org}", {"name": "k", "type": "secret", "expires_at": "9999-12-31T23:59:59-14:00"}),
    ("nl%0A", {"name": "k", "type": "secret"}),
    ("{org}", {"name": "k", "type": "secret", "scopes": ["a\n"]}),
]


async def test_a_burst_of_poison_and_normal_commands(
    api: Api, client: TestClient, pool: asyncpg.Pool
) -> None:
    orgs = [new_org() for _ in range(6)]
    requests = []
    for i in range(30):
        org = orgs[i % len(orgs)]
        if i % 2:
            target, body = POISON[i // 2 % len(POISON)]
            requests.append((False, f"/v1/orgs/{target.format(org=org)}/keys", body))
        else:
            requests.append(
                (True, f"/v1/orgs/{org}/keys", {"name": f"normal {i}", "type": "secret"})
            )

    async def send(path: str, body: Any) -> tuple[int, Any]:
        response = await client.post(path, json=body, headers=api.headers())
        return response.status, await response.json()

    results = await asyncio.gather(*(send(path, body) for _, path, body in requests))
    positions = []
    for (normal, _, _), (status, answer) in zip(requests, results, strict=True):
        if normal:
            assert status == 201, answer
            positions.append(answer["position"])
        else:
            assert (status, answer["error"]["code"]) == (422, "validation_error"), answer
    # The read model and readiness stay live for everyone.
    for org in orgs:
        status, _, page = await api.get(f"/v1/orgs/{org}/keys?min_position={max(positions)}")
        assert status == 200 and all(key["name"].startswith("normal") for key in page["data"])
    total = await pool.fetchval("SELECT count(*) FROM events WHERE org_id = ANY($1)", orgs)
    assert total == len(positions) == 15
    response = await client.get("/readyz")
    assert response.status == 200


async def test_strategies_really_generate_hostile_text() -> None:
    """Guard against a strategy that silently stopped producing the characters that matter."""
    seen: set[str] = set()

    @settings(max_examples=400, database=None, deadline=None)
    @given(st.lists(hostile.texts, max_size=4))
    def collect(texts: list[str]) -> None:
        for text in texts:
            seen.update(
                kind
                for kind, chars in (
                    ("nul", "\x00"),
                    ("esc", "\x1b"),
                    ("newline", "\n"),
                )
                if any(c in text for c in chars)
            )
            if any("\ud800" <= c <= "\udfff" for c in text):
                seen.add("surrogate")

    collect()
    assert seen == {"nul", "esc", "surrogate", "newline"}
