"""Bad input never gets a 5xx (docs/security.md §1; issue 9, class 4).

JSON nested deeper than the parser takes, credentials that are not ASCII,
digits that are not ASCII, instants that overflow once converted to UTC,
numbers that do not fit: each gets a stable 4xx (401 for credentials). Raw
bytes that an HTTP client library would refuse to send go over a socket.
"""

from __future__ import annotations

import base64
import json

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from tests.support.api import Api, new_org
from tests.support.raw_http import post_raw, raw_request

KEY_ID = "key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P"


async def count_events(pool: asyncpg.Pool, org: str) -> int:
    return await pool.fetchval("SELECT count(*) FROM events WHERE org_id = $1", org)


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


async def test_cursors_nested_deeper_than_the_parser_takes_are_invalid_cursor(api: Api) -> None:
    org = new_org()
    for payload in (b"[" * 5000, b'{"":' * 1300, b"\xff\xfe", b'{"o": "\\ud800"}'):
        cursor = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        status, _, answer = await api.get(f"/v1/orgs/{org}/keys?cursor={cursor}")
        assert (status, answer["error"]["code"]) == (422, "invalid_cursor")
    for cursor in ("%C2%B2", "%FF", "a%0A"):
        status, _, answer = await api.get(f"/v1/orgs/{org}/keys?cursor={cursor}")
        assert (status, answer["error"]["code"]) == (422, "invalid_cursor")
