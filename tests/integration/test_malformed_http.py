"""HTTP that aiohttp's parser refuses still gets keyledger's JSON error and one log line."""

from __future__ import annotations

import io
import json

import pytest
from aiohttp.test_utils import TestClient

from tests.support.api import Api
from tests.support.raw_http import raw_request

SECRET = "sk_live_" + "a" * 40


@pytest.mark.parametrize(
    ("target", "headers", "status", "code"),
    [
        (
            "/v1/verify",
            [f"Authorization: Bearer {SECRET}{'a' * 9000}".encode()],
            431,
            "header_too_large",
        ),
        ("/v1/verify?" + "x" * 9000, [], 431, "header_too_large"),
        (
            "/v1/verify",
            [b"Idempotency-Key: \x01x", f"X-Key: {SECRET}\x01".encode()],
            400,
            "invalid_request",
        ),
    ],
)
async def test_malformed_http_is_a_json_error_with_a_request_id(
    client: TestClient,
    captured_logs: io.StringIO,
    target: str,
    headers: list[bytes],
    status: int,
    code: str,
) -> None:
    before = len(captured_logs.getvalue())
    answered, body = await raw_request(client, "POST", target, headers)
    assert answered == status
    error = json.loads(body)["error"]
    assert error["code"] == code and error["request_id"].startswith("req_")
    assert SECRET not in body.decode() and "aaaa" not in body.decode()
    lines = [json.loads(line) for line in captured_logs.getvalue()[before:].splitlines()]
    mine = [line for line in lines if line.get("request_id") == error["request_id"]]
    assert [(line["event"], line["status"]) for line in mine] == [("request", status)]
    assert not [line for line in lines if line.get("level") == "error"]
    assert SECRET not in captured_logs.getvalue()[before:]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_is_not_what_its_content_encoding_says_is_a_400(
    client: TestClient, api: Api, captured_logs: io.StringIO, encoding: str
) -> None:
    before = len(captured_logs.getvalue())
    body = json.dumps({"key": SECRET}).encode()
    headers = [f"Authorization: Bearer {api.service_key}".encode()]
    headers.append(f"Content-Encoding: {encoding}".encode())
    for path in ("/v1/verify", "/v1/orgs/acme/keys"):
        answered, answer = await raw_request(client, "POST", path, headers, body)
        assert answered == 400, answer
        assert json.loads(answer)["error"]["code"] == "invalid_request"
    lines = [json.loads(line) for line in captured_logs.getvalue()[before:].splitlines()]
    assert not [line for line in lines if line.get("level") == "error"]
