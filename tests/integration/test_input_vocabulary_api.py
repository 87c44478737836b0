"""Hostile input over HTTP (SPEC §10): refused with a stable 4xx, never a 5xx, no secret echoed.

Classes of issue 9, each with several members:
1. poison text and identifiers are never accepted (NUL in a name, an org id
   ending in a newline, …), so nothing downstream can choke on them;
4. bad input never gets a 5xx (JSON nested 10k deep, non-ASCII credentials,
   non-ASCII digits, instants that overflow once converted to UTC);
5. nothing is accepted that ``events.decode`` cannot read back (deep metadata);
7. no error message, detail or log line repeats a secret.
Raw bytes that an HTTP client library would refuse to send (0xFF in a header)
go over a plain socket.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from service.domain import key_material
from tests.support.api import Api, new_org

KEY_ID = "key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P"
JSON = {"Content-Type": "application/json"}


async def raw_request(
    client: TestClient, method: str, target: str, headers: list[bytes], body: bytes = b""
) -> tuple[int, bytes]:
    """One HTTP/1.1 request written byte for byte; (status, body)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    head = [f"{method} {target} HTTP/1.1".encode(), b"Host: test", b"Connection: close"]
    if body:
        head += [b"Content-Type: application/json", f"Content-Length: {len(body)}".encode()]
    writer.write(b"\r\n".join([*head, *headers]) + b"\r\n\r\n" + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def count_events(pool: asyncpg.Pool, org: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM events WHERE org_id = $1", org)


async def post_raw(client: TestClient, api: Api, path: str, raw: str | bytes) -> tuple[int, Any]:
    response = await client.post(path, data=raw, headers={**api.headers(), **JSON})
    return response.status, await response.json()


# -- class 1 and 5: poison is never accepted ------------------------------------------

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


# -- class 4: no 5xx on bad input -----------------------------------------------------


def deep_json(depth: int, container: str) -> str:
    if container == "array":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


@pytest.mark.parametrize(
    ("container", "depth"), [("array", 10_000), ("array", 32_000), ("object", 10_000)]
)
async def test_json_deeper_than_the_parser_takes_is_invalid_json(
    client: TestClient, api: Api, container: str, depth: int
) -> None:
    org = new_org()
    key_id = (await api.generate(org))["key"]["id"]
    paths = [f"/v1/orgs/{org}/keys", "/v1/verify"] + [
        f"/v1/orgs/{org}/keys/{key_id}/{command}"
        for command in ("rename", "disable", "enable", "revoke", "rotate")
    ]
    for path in paths:
        status, answer = await post_raw(client, api, path, deep_json(depth, container))
        assert (status, answer["error"]["code"]) == (400, "invalid_json"), path
        # The same depth inside a field: still a 4xx, never a 500.
        inner = (
            f'{{"name": "k", "type": "secret", "metadata": {{"m": {deep_json(depth, container)}}}}}'
        )
        status, answer = await post_raw(client, api, path, inner)
        assert status in (400, 422), (path, status)
    status, _, key = await api.get(f"/v1/orgs/{org}/keys/{key_id}")
    assert status == 200 and key["version"] == 1


@pytest.mark.parametrize("depth", [150, 250, 500, 990])
async def test_json_just_around_parser_limits_is_a_client_error(
    client: TestClient, api: Api, depth: int
) -> None:
    for container in ("array", "object"):
        status, answer = await post_raw(client, api, "/v1/verify", deep_json(depth, container))
        assert status in (400, 422), (depth, container, status)
        signed = {
            "key_id": KEY_ID,
            "signature": "AAAA",
            "method": "POST",
            "path": "/x",
            "body": deep_json(5_000, container),
        }
        status, _, answer = await api.post("/v1/verify", signed)
        assert status == 200 and answer["code"] in ("NOT_FOUND", "MALFORMED")


ROUTES = [
    ("GET", "/v1/orgs/acme/keys"),
    ("GET", f"/v1/orgs/acme/keys/{KEY_ID}"),
    ("GET", f"/v1/orgs/acme/keys/{KEY_ID}/events"),
    ("POST", "/v1/orgs/acme/keys"),
    ("POST", f"/v1/orgs/acme/keys/{KEY_ID}/rename"),
    ("POST", f"/v1/orgs/acme/keys/{KEY_ID}/disable"),
    ("POST", f"/v1/orgs/acme/keys/{KEY_ID}/enable"),
    ("POST", f"/v1/orgs/acme/keys/{KEY_ID}/revoke"),
    ("POST", f"/v1/orgs/acme/keys/{KEY_ID}/rotate"),
    ("GET", "/v1/audit"),
    ("GET", "/v1/audit/verify"),
    ("POST", "/v1/verify"),
]
NON_ASCII = [b"\xff", b"\x80abc", b"\xc3\x28", b"\xed\xa0\x80", b"\xc3\xbf", b"\xe2\x82\xac"]


@pytest.mark.parametrize("credential", NON_ASCII)
async def test_non_ascii_credentials_are_401_on_every_route(
    client: TestClient, credential: bytes
) -> None:
    for method, path in ROUTES:
        for header in (b"Authorization: Bearer " + credential, b"Authorization: " + credential):
            status, body = await raw_request(client, method, path, [header])
            assert status == 401, (method, path, header, body[:200])
            assert json.loads(body)["error"]["code"] == "invalid_api_key"
    status, body = await raw_request(
        client, "GET", "/v1/authorize", [b"X-Keyledger-Service-Key: " + credential]
    )
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("credential", NON_ASCII)
async def test_non_ascii_customer_credentials_through_authorize_are_401(
    client: TestClient, api: Api, credential: bytes
) -> None:
    proxy = f"X-Keyledger-Service-Key: {api.service_key}".encode()
    org = new_org()
    signing = await api.generate(org, type="signing")
    for headers in (
        [b"Authorization: Bearer " + credential],
        [b"X-API-Key: " + credential, b"X-API-Signature: AAAA"],
        [f"X-API-Key: {KEY_ID}".encode(), b"X-API-Signature: " + credential],
        [b"X-API-Key: " + credential, b"X-API-Signature: " + credential],
        [
            f"X-API-Key: {signing['key']['id']}".encode(),
            b"X-API-Signature: AAAA",
            b"X-Forwarded-Method: GET",
            b"X-Forwarded-Uri: /path" + credential,
        ],
        [
            f"X-API-Key: {signing['key']['id']}".encode(),
            b"X-API-Signature: AAAA",
            b"X-API-Timestamp: " + credential,
            b"X-Forwarded-Uri: /",
        ],
    ):
        status, body = await raw_request(client, "GET", "/v1/authorize", [proxy, *headers])
        assert status == 401, (headers, body[:200])
        assert json.loads(body)["code"] in ("MALFORMED", "NOT_FOUND")


async def test_non_ascii_event_headers_are_invalid_header(client: TestClient, api: Api) -> None:
    auth = f"Authorization: Bearer {api.service_key}".encode()
    body = b'{"name": "k", "type": "secret"}'
    org = new_org()
    for name in (b"X-On-Behalf-Of", b"Idempotency-Key"):
        for value in (b"\xff", b"user\xc3\xa9", b"\x80", b"a" * 256):
            status, answer = await raw_request(
                client, "POST", f"/v1/orgs/{org}/keys", [auth, name + b": " + value], body
            )
            assert status == 400 and json.loads(answer)["error"]["code"] == "invalid_header"
    # A bad X-Request-Id is replaced, as before: the command goes through with a generated id.
    status, answer = await raw_request(
        client, "POST", f"/v1/orgs/{org}/keys", [auth, b"X-Request-Id: \xff"], body
    )
    assert status == 201 and json.loads(answer)["key"]["org_id"] == org


@pytest.mark.parametrize(
    "value", ["%C2%B2", "%D9%A1", "%EF%BC%91", "1" * 19, "-1", "%201", "1%0A", "0x1", "1e3", ""]
)
async def test_numeric_query_values_are_ascii_digits(api: Api, value: str) -> None:
    org = new_org()
    key_id = (await api.generate(org))["key"]["id"]
    checks = [
        (f"/v1/orgs/{org}/keys?limit={value}", "invalid_limit"),
        (f"/v1/audit?limit={value}", "invalid_limit"),
        (f"/v1/audit?after={value}", "invalid_cursor"),
    ] + [
        (f"{path}?min_position={value}", "invalid_min_position")
        for path in (
            f"/v1/orgs/{org}/keys",
            f"/v1/orgs/{org}/keys/{key_id}",
            f"/v1/orgs/{org}/keys/{key_id}/events",
            "/v1/audit",
            "/v1/audit/verify",
        )
    ]
    for path, code in checks:
        status, _, answer = await api.get(path)
        assert (status, answer["error"]["code"]) == (422, code), path
    status, _, answer = await api.get(
        f"/v1/authorize?min_position={value}",
        headers={"X-Keyledger-Service-Key": api.service_key},
    )
    assert (status, answer["error"]["code"]) == (422, "validation_error")


@pytest.mark.parametrize(
    "moment",
    [
        "0001-01-01T00:00:00%2B14:00",
        "9999-12-31T23:59:59-14:00",
        "9999-12-31T23:30:00-00:31",
        "0001-01-01T00:00:00%2B00:01",
        "%D9%A2%D9%A0%D9%A2%D9%A4-01-01T00:00:00Z",
        "2030-01-01T00:00:00",
        "2030-01-01T00:00:00Z%0A",
    ],
)
async def test_query_instants_stay_within_years_1_to_9999(api: Api, moment: str) -> None:
    for name in ("since", "until"):
        status, _, answer = await api.get(f"/v1/audit?{name}={moment}")
        assert (status, answer["error"]["code"]) == (422, "invalid_timestamp"), name


async def test_query_instants_at_the_edges_of_the_range_work(api: Api) -> None:
    status, _, _ = await api.get(
        "/v1/audit?since=0001-01-01T00:00:00.000001Z&until=9999-12-31T23:59:59.999998Z&limit=1"
    )
    assert status == 200


@pytest.mark.parametrize(
    "expires_at",
    [
        "9999-12-31T23:59:59-14:00",
        "9999-12-31T23:59:59.999999-00:01",
        "9999-12-31T23:59:59.999999Z",
        "0001-01-01T00:00:00+14:00",
        "10000-01-01T00:00:00Z",
        "2030-01-01T00:00:00",
        "2030-01-01T00:00:00Z\n",
        "2000-01-01T00:00:00Z",
    ],
)
async def test_expires_at_stays_within_years_1_to_9999(
    api: Api, pool: asyncpg.Pool, expires_at: str
) -> None:
    org = new_org()
    status, _, answer = await api.post(
        f"/v1/orgs/{org}/keys", {"name": "k", "type": "secret", "expires_at": expires_at}
    )
    assert (status, answer["error"]["code"]) == (422, "validation_error")
    assert await count_events(pool, org) == 0


async def test_a_key_expiring_at_the_end_of_year_9999_works_everywhere(api: Api) -> None:
    org = new_org()
    created = await api.generate(org, expires_at="9999-12-31T23:59:59.999998Z")
    key_id, secret = created["key"]["id"], created["secret"]
    status, _, rotated = await api.post(
        f"/v1/orgs/{org}/keys/{key_id}/rotate", {"grace_period": "7d"}
    )
    assert status == 200
    status, _, verdict = await api.post(
        "/v1/verify", {"key": rotated["secret"], "min_position": rotated["position"]}
    )
    assert status == 200 and verdict["code"] == "VALID"
    status, _, verdict = await api.post("/v1/verify", {"key": secret})
    assert status == 200 and verdict["code"] == "VALID"  # in its grace period
    for path in (
        f"/v1/orgs/{org}/keys",
        f"/v1/orgs/{org}/keys/{key_id}",
        f"/v1/audit?org_id={org}",
    ):
        status, _, _ = await api.get(path)
        assert status == 200, path


async def test_oversized_numbers_in_bodies_are_422(client: TestClient, api: Api) -> None:
    org = new_org()
    for raw in (
        '{"name":"k","type":"secret","rate_limit":{"limit":1e400,"window":"1s"}}',
        '{"name":"k","type":"secret","rate_limit":{"limit":' + "9" * 40 + ',"window":"1s"}}',
        '{"name":"k","type":"secret","rate_limit":{"limit":1.5,"window":"1s"}}',
        '{"name":"k","type":"secret","rate_limit":{"limit":true,"window":"1s"}}',
        '{"name":"k","type":"secret","rate_limit":{"limit":5.0,"window":"1s"}}',
        '{"name":"k","type":"secret","rate_limit":{"limit":"5","window":"1s"}}',
        '{"name":"k","type":"secret","rate_limit":{"limit":"9","window":"1s","x":1}}',
    ):
        status, answer = await post_raw(client, api, f"/v1/orgs/{org}/keys", raw)
        assert (status, answer["error"]["code"]) == (422, "validation_error"), raw
    for raw in (
        '{"key":"sk_x","min_position":' + "9" * 40 + "}",
        '{"key":"sk_x","min_position":1e30}',
    ):
        status, answer = await post_raw(client, api, "/v1/verify", raw)
        assert (status, answer["error"]["code"]) == (422, "validation_error"), raw


# -- class 7: no secret echoed ----------------------------------------------------------


async def test_no_secret_is_echoed_in_errors_or_logs(
    client: TestClient, api: Api, captured_logs: io.StringIO
) -> None:
    org = new_org()
    key_id = (await api.generate(org))["key"]["id"]
    secrets = [
        key_material.new_secret(kind, env)
        for kind in ("secret", "embed")
        for env in ("live", "test")
    ]
    truncated = key_material.new_secret("secret", "live")[:40]
    answers: list[str] = []

    async def collect(response: Any) -> None:
        assert 400 <= response.status < 500, response.status
        answers.append(await response.text())

    for secret in [*secrets, truncated]:
        headers = api.headers()
        await collect(await client.get(f"/v1/orgs/{org}/keys?{secret}=1", headers=headers))
        await collect(await client.get(f"/v1/orgs/{org}/keys?x{secret}y=1", headers=headers))
        await collect(await client.get(f"/v1/orgs/{org}/keys?limit={secret}", headers=headers))
        await collect(await client.get(f"/v1/audit?actor={secret}%0A", headers=headers))
        await collect(await client.get(f"/v1/audit?{secret}=1", headers=headers))
        await collect(await client.get(f"/v1/orgs/{org}/keys?cursor={secret}", headers=headers))
        for body in (
            {"name": "k", "type": "secret", secret: 1},
            {"name": "k", "type": "secret", "metadata": {secret: "\x00"}},
            {"name": "k", "type": "secret", "rate_limit": {"limit": 1, "window": "1s", secret: 1}},
            {"name": "k", "type": secret},
            {"name": secret + "\x00", "type": "secret"},
            {"name": "k", "type": "secret", "scopes": [secret]},
        ):
            await collect(await client.post(f"/v1/orgs/{org}/keys", json=body, headers=headers))
        await collect(
            await client.post(
                f"/v1/orgs/{org}/keys/{key_id}/rename",
                json={"name": "x", secret: 1},
                headers=headers,
            )
        )
        await collect(
            await client.post("/v1/verify", json={"key": secret, secret: 1}, headers=headers)
        )
        await collect(
            await client.post(
                f"/v1/orgs/{org}/keys",
                json={"name": "k", "type": "secret"},
                headers={**headers, "X-On-Behalf-Of": secret + "é"},
            )
        )
        await collect(
            await client.get(f"/v1/orgs/{org}/keys", headers={"Authorization": f"Bearer {secret}"})
        )
        await collect(
            await client.get(f"/v1/orgs/{org}/keys?{secret}", headers={"Authorization": secret})
        )
    text = "\n".join(answers)
    assert "[redacted]" in text  # the secrets were really in the way of an error message
    logs = captured_logs.getvalue()
    for secret in [*secrets, truncated]:
        assert secret not in text
        assert secret not in logs


async def test_cursors_nested_deeper_than_the_parser_takes_are_invalid_cursor(api: Api) -> None:
    org = new_org()
    for payload in (b"[" * 5000, b'{"":' * 1300, b"\xff\xfe", b'{"o": "\\ud800"}'):
        cursor = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        status, _, answer = await api.get(f"/v1/orgs/{org}/keys?cursor={cursor}")
        assert (status, answer["error"]["code"]) == (422, "invalid_cursor")
    for cursor in ("%C2%B2", "%FF", "a%0A"):
        status, _, answer = await api.get(f"/v1/orgs/{org}/keys?cursor={cursor}")
        assert (status, answer["error"]["code"]) == (422, "invalid_cursor")


async def test_requests_refused_by_the_http_parser_repeat_no_secret(
    client: TestClient, captured_logs: io.StringIO
) -> None:
    secret = key_material.new_secret("secret", "live")
    raw = secret.encode()
    for target, headers in (
        ("/v1/audit", [b"Authorization: Bearer " + raw + b"\x01"]),
        ("/v1/audit", [b"X-" + raw + b"\x01: 1"]),
        ("/v1/audit", [b"Broken header " + raw]),
        ("/v1/audit", [b"X-Api-Key: " + raw + b"\x00"]),
        ("/v1/audit?\x01" + secret, []),
    ):
        status, body = await raw_request(client, "GET", target, headers)
        assert status == 400, body
        assert raw not in body and raw[:30] not in body
    assert secret not in captured_logs.getvalue()
