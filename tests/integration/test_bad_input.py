"""Bad input of every kind: a clear 4xx with a stable code, nothing written (docs/api.md#errors)."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.support.api import Api, new_org

VALID = {"name": "Key", "type": "secret"}


async def raw_post(client: TestClient, api: Api, path: str, data: Any, content_type: str | None):
    headers = api.headers()
    if content_type:
        headers["Content-Type"] = content_type
    response = await client.post(path, data=data, headers=headers)
    return response.status, await response.json()


async def count_events(pool: asyncpg.Pool, org: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM events WHERE org_id = $1", org)


@pytest.mark.parametrize(
    ("data", "content_type", "status", "code"),
    [
        (b"{not json", "application/json", 400, "malformed_json"),
        (b'{"name": "x", "type": NaN}', "application/json", 400, "malformed_json"),
        (b"\xff\xfe", "application/json", 400, "malformed_json"),
        (b'{"name":"Key","type":"secret"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"name":"Key","type":"secret"}', None, 415, "unsupported_media_type"),
        (
            b'{"name":"Key","type":"secret"}',
            "application/json; charset=latin-1",
            415,
            "unsupported_media_type",
        ),
        (b"[1, 2]", "application/json", 422, "validation_error"),
        (b'"text"', "application/json", 422, "validation_error"),
        (b"{}", "application/json", 422, "validation_error"),
        (
            b'{"name":"Key","type":"secret","x":' + b'"a' * 40_000 + b'"}',
            "application/json",
            413,
            "payload_too_large",
        ),
    ],
)
async def test_malformed_bodies(
    client: TestClient,
    api: Api,
    pool: asyncpg.Pool,
    data: bytes,
    content_type: str | None,
    status: int,
    code: str,
) -> None:
    org = new_org()
    got_status, body = await raw_post(client, api, f"/v1/orgs/{org}/keys", data, content_type)
    assert (got_status, body["error"]["code"]) == (status, code)
    assert body["error"]["request_id"] and body["error"]["message"]
    assert await count_events(pool, org) == 0


async def _post_in_parts(client: TestClient, api: Api, path: str, parts: list[bytes]) -> int:
    """POST the body in ``parts``, each written after the server had a moment with the last;
    the status of the answer."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    size = sum(len(part) for part in parts)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        f"Authorization: Bearer {api.service_key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {size}\r\n\r\n"
    )
    for number, part in enumerate(parts):
        writer.write(head.encode() + part if number == 0 else part)
        await writer.drain()
        await asyncio.sleep(0.05)  # not an assertion: lets the server read the head alone
    answer = await reader.read()
    writer.close()
    return int(answer.split(b" ", 2)[1])


@pytest.mark.parametrize("split", [False, True], ids=["with-the-head", "after-the-head"])
async def test_64_kib_bodies_whether_they_come_with_the_head_or_after(
    client: TestClient, api: Api, split: bool
) -> None:
    # A body that arrived whole is taken from the buffer, one still coming is awaited:
    # the limit is the same either way.
    opening = b'{"key": "sk_live_bad"'
    for size, status in ((64 * 1024, 200), (64 * 1024 + 1, 413)):
        body = opening + b" " * (size - len(opening) - 1) + b"}"
        parts = [b"", body] if split else [body]
        assert await _post_in_parts(client, api, "/v1/verify", parts) == status


@pytest.mark.parametrize(
    "body",
    [
        {**VALID, "expires_on": "30d"},  # a typo is not silently ignored
        {**VALID, "name": ""},
        {**VALID, "name": "   "},
        {**VALID, "name": "x" * 101},
        {**VALID, "name": 42},
        {**VALID, "type": "public"},
        {**VALID, "environment": "prod"},
        {**VALID, "expires_in": "2w"},
        {**VALID, "expires_in": "30d", "expires_at": "2999-01-01T00:00:00Z"},
        {**VALID, "expires_at": "2000-01-01T00:00:00Z"},
        {**VALID, "expires_at": "2999-01-01T00:00:00"},
        {**VALID, "expires_at": "tomorrow"},
        {**VALID, "scopes": "templates:read"},
        {**VALID, "scopes": ["*"]},
        {**VALID, "scopes": ["Templates:read"]},
        {**VALID, "scopes": ["templ*tes"]},
        {**VALID, "scopes": ["a" * 65]},
        {**VALID, "metadata": {"blob": "x" * 5000}},
        {**VALID, "metadata": [1]},
        {**VALID, "rate_limit": {"limit": 0, "window": "1s"}},
        {**VALID, "rate_limit": {"limit": 5, "window": "1w"}},
        {**VALID, "rate_limit": {"limit": 5, "window": "1s", "burst": 3}},
        {**VALID, "allowed_origins": ["https://a.example"]},
        {**VALID, "resource": "tpl_1"},
        {**VALID, "algorithm": "ed25519"},
        {"name": "Embed", "type": "embed", "resource": "tpl"},
        {"name": "Embed", "type": "embed", "allowed_origins": ["https://a.example"]},
        {"name": "Embed", "type": "embed", "resource": "t", "allowed_origins": []},
        {"name": "Embed", "type": "embed", "resource": "t", "allowed_origins": ["a.example"]},
        {
            "name": "Embed",
            "type": "embed",
            "resource": "t",
            "allowed_origins": ["https://a.example/path"],
        },
        {
            "name": "Embed",
            "type": "embed",
            "resource": "t",
            "allowed_origins": [f"https://a{i}.example" for i in range(51)],
        },
        {"name": "Sig", "type": "signing", "algorithm": "dsa"},
    ],
)
async def test_invalid_generate_bodies(api: Api, pool: asyncpg.Pool, body: dict) -> None:
    org = new_org()
    status, _, answer = await api.post(f"/v1/orgs/{org}/keys", body)
    assert status == 422, body
    assert answer["error"]["code"] == "validation_error"
    assert isinstance(answer["error"]["details"], list)
    assert await count_events(pool, org) == 0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("rename", {}),
        ("rename", {"name": ""}),
        ("rename", {"name": "ok", "extra": 1}),
        ("disable", {"reason": ""}),
        ("disable", {"why": "x"}),
        ("enable", {"force": True}),
        ("revoke", {}),
        ("revoke", {"reason": "bored"}),
        ("rotate", {"grace_period": "8d"}),
        ("rotate", {"grace_period": "soon"}),
        ("rotate", {"grace_period": 3600}),
    ],
)
async def test_invalid_command_bodies(api: Api, pool: asyncpg.Pool, path: str, body: dict) -> None:
    org = new_org()
    key_id = (await api.generate(org))["key"]["id"]
    status, _, answer = await api.post(f"/v1/orgs/{org}/keys/{key_id}/{path}", body)
    assert (status, answer["error"]["code"]) == (422, "validation_error")
    assert await count_events(pool, org) == 1


@pytest.mark.parametrize(
    "expires_at", [99999999999999, 1, 1.5, "1700000000", "99999999999999", True, "2030-01-01"]
)
async def test_an_expiry_is_an_iso_text_with_a_timezone(
    api: Api, pool: asyncpg.Pool, expires_at: object
) -> None:
    org = new_org()
    status, _, answer = await api.post(f"/v1/orgs/{org}/keys", {**VALID, "expires_at": expires_at})
    assert status == 422 and answer["error"]["code"] == "validation_error"
    assert answer["error"]["details"][0]["loc"] == ["expires_at"]
    assert await count_events(pool, org) == 0


async def test_a_utf8_charset_is_accepted(client: TestClient, api: Api) -> None:
    org = new_org()
    for charset in ("utf-8", "UTF-8", "utf8"):
        status, _ = await raw_post(
            client,
            api,
            f"/v1/orgs/{org}/keys",
            b'{"name":"Key","type":"secret"}',
            f"application/json; charset={charset}",
        )
        assert status == 201


async def test_validation_details_do_not_echo_input(api: Api) -> None:
    leaked = "sk_live_" + "A" * 49
    status, _, answer = await api.post(f"/v1/orgs/{new_org()}/keys", {"name": "k", "type": leaked})
    assert status == 422 and leaked not in str(answer)


async def test_bad_ids_in_the_path(api: Api) -> None:
    status, _, body = await api.post("/v1/orgs/Bad Org!/keys", VALID)
    assert (status, body["error"]["code"]) == (422, "validation_error")
    status, _, body = await api.post(f"/v1/orgs/{'a' * 64}/keys", VALID)
    assert (status, body["error"]["code"]) == (422, "validation_error")
    org = new_org()
    for key_id in ["nope", "key_123", "key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P"]:
        status, _, body = await api.post(f"/v1/orgs/{org}/keys/{key_id}/rename", {"name": "x"})
        assert (status, body["error"]["code"]) == (404, "key_not_found")
        status, _, body = await api.get(f"/v1/orgs/{org}/keys/{key_id}")
        assert (status, body["error"]["code"]) == (404, "key_not_found")


async def test_key_of_another_org_is_not_found(api: Api) -> None:
    key_id = (await api.generate(new_org()))["key"]["id"]
    other = new_org()
    status, _, body = await api.get(f"/v1/orgs/{other}/keys/{key_id}")
    assert (status, body["error"]["code"]) == (404, "key_not_found")
    status, _, body = await api.post(f"/v1/orgs/{other}/keys/{key_id}/revoke", {"reason": "other"})
    assert (status, body["error"]["code"]) == (404, "key_not_found")


async def test_unknown_routes_and_methods_answer_json(client: TestClient, api: Api) -> None:
    response = await client.get("/v2/nothing", headers=api.headers())
    assert response.status == 404 and (await response.json())["error"]["code"] == "not_found"
    response = await client.delete(f"/v1/orgs/{new_org()}/keys", headers=api.headers())
    body = await response.json()
    assert response.status == 405 and body["error"]["code"] == "method_not_allowed"
    # The methods the path has, as aiohttp's router gathers them; the request's id, as always.
    assert response.headers["Allow"] == "GET,HEAD,POST"
    assert response.headers["X-Request-Id"] == body["error"]["request_id"]
    response = await client.get("/v1/verify", headers=api.headers())
    assert (response.status, response.headers["Allow"]) == (405, "POST")


async def test_bad_headers(api: Api) -> None:
    org = new_org()
    status, _, body = await api.post(
        f"/v1/orgs/{org}/keys", VALID, headers={"X-On-Behalf-Of": "x" * 300}
    )
    assert (status, body["error"]["code"]) == (400, "invalid_header")
    status, headers, _ = await api.post(
        f"/v1/orgs/{org}/keys", VALID, headers={"X-Request-Id": "bad id with spaces"}
    )
    assert status == 201 and headers["X-Request-Id"].startswith("req_")
