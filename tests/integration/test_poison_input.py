"""Poison is never accepted (docs/security.md §1 and §5; issue 9, classes 1 and 5).

Text that PostgreSQL, UTF-8 or a terminal cannot take (NUL, ESC, DEL, C1,
lone surrogates), identifiers with a trailing newline, metadata nested deeper
than ``events.decode`` reads back: refused with 422 and nothing written, so
no derived part of the service can ever choke on them.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.support.api import Api, new_org
from tests.support.raw_http import post_raw

KEY_ID = "key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P"


async def count_events(pool: asyncpg.Pool, org: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM events WHERE org_id = $1", org)


POISON_TEXT = ["a\x00b", "esc\x1b[2J", "del\x7f", "c1\x85", "c1\x9f", "tab\tname", "line\nbreak"]
# Lone surrogates can only arrive as JSON escapes (or raw bytes, refused as malformed JSON).
LONE_SURROGATES = ['"lone \\ud800"', '"\\udcff"', '"\\udfff tail"']


@pytest.mark.parametrize("poison", POISON_TEXT)
async def test_poison_text_is_refused_in_every_text_field(
    api: Api, pool: asyncpg.Pool, poison: str
) -> None:
    org = new_org()
    key_id = (await api.generate(org))["key"]["id"]
    bodies = [
        (f"/v1/orgs/{org}/keys", {"name": poison, "type": "secret"}),
        (f"/v1/orgs/{org}/keys", {"name": "k", "type": "secret", "metadata": {poison: 1}}),
        (
            f"/v1/orgs/{org}/keys",
            {"name": "k", "type": "embed", "resource": poison, "allowed_origins": ["https://a.b"]},
        ),
        (f"/v1/orgs/{org}/keys/{key_id}/rename", {"name": poison}),
        (f"/v1/orgs/{org}/keys/{key_id}/disable", {"reason": poison}),
    ]
    for path, body in bodies:
        status, _, answer = await api.post(path, body)
        assert (status, answer["error"]["code"]) == (422, "validation_error"), (path, body)
    assert await count_events(pool, org) == 1


@pytest.mark.parametrize("surrogate", LONE_SURROGATES)
async def test_lone_surrogates_are_refused(
    client: TestClient, api: Api, pool: asyncpg.Pool, surrogate: str
) -> None:
    org = new_org()
    key_id = (await api.generate(org))["key"]["id"]
    raws = [
        (f"/v1/orgs/{org}/keys", f'{{"name": {surrogate}, "type": "secret"}}'),
        (
            f"/v1/orgs/{org}/keys",
            f'{{"name": "k", "type": "secret", "metadata": {{"a": {surrogate}}}}}',
        ),
        (
            f"/v1/orgs/{org}/keys",
            f'{{"name": "k", "type": "secret", "metadata": {{{surrogate}: 1}}}}',
        ),
        (
            f"/v1/orgs/{org}/keys",
            f'{{"name": "k", "type": "secret", "metadata": {{"a": [[{surrogate}]]}}}}',
        ),
        (f"/v1/orgs/{org}/keys/{key_id}/rename", f'{{"name": {surrogate}}}'),
        (f"/v1/orgs/{org}/keys/{key_id}/disable", f'{{"reason": {surrogate}}}'),
    ]
    for path, raw in raws:
        status, answer = await post_raw(client, api, path, raw)
        assert (status, answer["error"]["code"]) == (422, "validation_error"), raw
    assert await count_events(pool, org) == 1


async def test_metadata_strings_keep_line_breaks_but_no_other_control(api: Api) -> None:
    org = new_org()
    metadata = {"note": "line one\nline two\r\n\tindented", "ok": ["a\tb"]}
    created = await api.generate(org, metadata=metadata)
    status, _, key = await api.get(
        f"/v1/orgs/{org}/keys/{created['key']['id']}?min_position={created['position']}"
    )
    assert status == 200 and key["metadata"] == metadata
    for bad in ("\x00", "\x0b", "\x1b", "\x7f", "\x85"):
        status, _, answer = await api.post(
            f"/v1/orgs/{org}/keys", {"name": "k", "type": "secret", "metadata": {"v": [bad]}}
        )
        assert (status, answer["error"]["code"]) == (422, "validation_error"), repr(bad)


def nested(depth: int, container: str) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value} if container == "object" else [value]
    return value


@pytest.mark.parametrize("container", ["object", "array"])
async def test_metadata_nests_at_most_eight_levels(
    api: Api, client: TestClient, pool: asyncpg.Pool, container: str
) -> None:
    org = new_org()
    # Eight containers inside the metadata object: accepted, and it reads back whole.
    deepest = {"top": nested(8, container)}
    created = await api.generate(org, metadata=deepest)
    status, _, key = await api.get(
        f"/v1/orgs/{org}/keys/{created['key']['id']}?min_position={created['position']}"
    )
    assert status == 200 and key["metadata"] == deepest
    for depth in (9, 20, 250, 900):
        status, answer = await post_raw(
            client,
            api,
            f"/v1/orgs/{org}/keys",
            json.dumps(
                {"name": "k", "type": "secret", "metadata": {"top": nested(depth, container)}}
            ),
        )
        assert (status, answer["error"]["code"]) == (422, "validation_error"), depth
    assert await count_events(pool, org) == 1


async def test_non_finite_numbers_in_metadata_are_refused(client: TestClient, api: Api) -> None:
    org = new_org()
    for number in ("1e400", "-1e400", "NaN", "Infinity", "-Infinity"):
        status, answer = await post_raw(
            client,
            api,
            f"/v1/orgs/{org}/keys",
            f'{{"name":"k","type":"secret","metadata":{{"n":{number}}}}}',
        )
        assert status in (400, 422) and answer["error"]["code"] in (
            "malformed_json",
            "validation_error",
        ), number


@pytest.mark.parametrize(
    "org", ["nl%0A", "nl%0D", "nl%00", "nl%20", "nl%09", "%0Anl", "n%C3%A9", "_system%0A", "NL"]
)
async def test_org_ids_are_matched_whole(api: Api, org: str) -> None:
    status, _, answer = await api.post(f"/v1/orgs/{org}/keys", {"name": "k", "type": "secret"})
    assert (status, answer["error"]["code"]) == (422, "validation_error")
    for path in (f"/v1/orgs/{org}/keys", f"/v1/orgs/{org}/keys/{KEY_ID}"):
        status, _, answer = await api.get(path)
        assert (status, answer["error"]["code"]) == (422, "validation_error")
    status, _, answer = await api.get(f"/v1/audit?org_id={org}")
    assert (status, answer["error"]["code"]) == (422, "validation_error")


@pytest.mark.parametrize("suffix", ["%0A", "%00", "%0D%0A", "%20", "%FF"])
async def test_key_ids_are_matched_whole(api: Api, suffix: str) -> None:
    org = new_org()
    key_id = (await api.generate(org))["key"]["id"]
    for method, path in (
        ("get", f"/v1/orgs/{org}/keys/{key_id}{suffix}"),
        ("get", f"/v1/orgs/{org}/keys/{key_id}{suffix}/events"),
        ("post", f"/v1/orgs/{org}/keys/{key_id}{suffix}/rename"),
    ):
        if method == "get":
            status, _, answer = await api.get(path)
        else:
            status, _, answer = await api.post(path, {"name": "x"})
        assert (status, answer["error"]["code"]) == (404, "key_not_found"), path
    status, _, answer = await api.get(f"/v1/audit?key_id={key_id}{suffix}")
    assert (status, answer["error"]["code"]) == (422, "validation_error")


async def test_identifiers_in_bodies_and_queries_are_matched_whole(api: Api) -> None:
    org = new_org()
    for body in (
        {"name": "k", "type": "secret", "scopes": ["orders:read\n"]},
        {"name": "k", "type": "embed", "resource": "r", "allowed_origins": ["https://a.b\n"]},
        {"name": "k", "type": "embed", "resource": "r", "allowed_origins": ["https://\u212a.b"]},
        {"name": "k", "type": "secret", "environment": "live\n"},
        {"name": "k", "type": "secret", "rate_limit": {"limit": 1, "window": "1s\n"}},
    ):
        status, _, answer = await api.post(f"/v1/orgs/{org}/keys", body)
        assert (status, answer["error"]["code"]) == (422, "validation_error"), body
    key_id = (await api.generate(org))["key"]["id"]
    status, _, _ = await api.post(f"/v1/orgs/{org}/keys/{key_id}/rotate", {"grace_period": "24h\n"})
    assert status == 422
    for query in ("actor=key_1%0A", "actor=%00", "event_type=KeyRevoked%0A"):
        status, _, answer = await api.get(f"/v1/audit?{query}")
        assert status == 422, query
    status, _, answer = await api.post("/v1/verify", {"key": "sk_x", "scopes": ["a\n"]})
    assert (status, answer["error"]["code"]) == (422, "validation_error")
