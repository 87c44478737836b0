"""``sign_request`` checked by the real server: both algorithms, the body's canonical form,
the timestamp window."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from keyledger_client import KeyledgerClient, sign_request
from tests.integration.test_client_api import QUICK, base_url
from tests.support.api import new_org

# (raw body as sent, what the signer is handed): every case must verify VALID.
BODIES: list[tuple[str | None, Any]] = [
    (None, None),
    ("", ""),
    ("{}", "{}"),
    ('{"a": null, "b": null}', '{"a": null, "b": null}'),
    ('{"symbol":"OIL-BTC","side":"buy","qty":12}', '{"symbol":"OIL-BTC","side":"buy","qty":12}'),
    ('{"price": "64000.50", "ok": true, "n": -1.5e3}', None),  # decimals as strings
    ('{"z": {"b": 1, "a": [3, {"y": 2, "x": 1}]}, "a": "x"}', None),  # nested: sorted, compact
    ('{"name": "caf\\u00e9 \\ud83d\\ude00", "sep": "a=b&c"}', None),  # unicode, separators
    ("[1, 2, 3]", None),  # not an object: adds nothing
    ("not json at all", None),
    ('  {\n "b" : 2 ,\n "a" : 1 }  ', None),  # whitespace
]


@pytest.fixture
async def kl(client: TestClient, admin_key: str) -> KeyledgerClient:
    async with KeyledgerClient(base_url(client), admin_key, retry=QUICK) as made:
        yield made


async def signing_key(kl: KeyledgerClient, algorithm: str) -> tuple[str, str]:
    made = await kl.generate_key(new_org(), name="signer", type="signing", algorithm=algorithm)
    assert made.private_key is not None
    return made.key.id, made.private_key


def verify_fields(
    headers: dict[str, str], method: str, path: str, body: str | None
) -> dict[str, Any]:
    return {
        "key_id": headers["X-API-Key"],
        "signature": headers["X-API-Signature"],
        "method": method,
        "path": path,
        "body": body,
        "timestamp": headers.get("X-API-Timestamp"),
    }


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa-2048"])
async def test_every_body_shape_verifies(kl: KeyledgerClient, algorithm: str) -> None:
    key_id, pem = await signing_key(kl, algorithm)
    for raw, given in BODIES:
        signed_body = given if given is not None else raw
        headers = sign_request("post", "/api/v1/orders?x=1&y=2", signed_body, pem, key_id)
        verdict = await kl.verify(**verify_fields(headers, "POST", "/api/v1/orders?x=1&y=2", raw))
        assert verdict.code == "VALID", (algorithm, raw)


async def test_a_mapping_body_is_signed_as_its_json(kl: KeyledgerClient) -> None:
    key_id, pem = await signing_key(kl, "ed25519")
    body = {"qty": 12, "side": "buy", "meta": {"b": [1, 2], "a": None}, "skip": None}
    headers = sign_request("POST", "/orders", body, pem, key_id)
    verdict = await kl.verify(**verify_fields(headers, "POST", "/orders", json.dumps(body)))
    assert verdict.code == "VALID"


@pytest.mark.parametrize("algorithm", ["ed25519", "rsa-2048"])
async def test_what_was_not_signed_does_not_verify(kl: KeyledgerClient, algorithm: str) -> None:
    key_id, pem = await signing_key(kl, algorithm)
    headers = sign_request("POST", "/orders?id=1", '{"qty": 12}', pem, key_id)
    for method, path, body in [
        ("POST", "/orders?id=1", '{"qty": 13}'),  # another body
        ("POST", "/orders?id=2", '{"qty": 12}'),  # another query
        ("PUT", "/orders?id=1", '{"qty": 12}'),  # another method
        ("POST", "/orders?id=1", None),  # the body left out
    ]:
        verdict = await kl.verify(**verify_fields(headers, method, path, body))
        assert verdict.code == "NOT_FOUND", (method, path, body)
    same = await kl.verify(**verify_fields(headers, "POST", "/orders?id=1", '{ "qty" : 12 }'))
    assert same.code == "VALID"  # only the canonical form counts, not the spacing


async def test_the_timestamp_window(kl: KeyledgerClient) -> None:
    key_id, pem = await signing_key(kl, "ed25519")
    now = int(time.time())
    for stamp, code in [
        (now - 240, "VALID"),
        (now + 240, "VALID"),
        (now - 400, "NOT_FOUND"),
        (now + 400, "NOT_FOUND"),
    ]:
        headers = sign_request("GET", "/p", None, pem, key_id, timestamp=stamp)
        assert headers["X-API-Timestamp"] == str(stamp)
        verdict = await kl.verify(**verify_fields(headers, "GET", "/p", None))
        assert verdict.code == code, stamp
    unstamped = sign_request("GET", "/p", None, pem, key_id, timestamp=False)
    assert "X-API-Timestamp" not in unstamped
    assert (await kl.verify(**verify_fields(unstamped, "GET", "/p", None))).code == "VALID"


async def test_signed_headers_pass_authorize(kl: KeyledgerClient) -> None:
    key_id, pem = await signing_key(kl, "rsa-2048")
    headers = sign_request("DELETE", "/orders/7?force=1", None, pem, key_id)
    answer = await kl.authorize_headers(
        {**headers, "X-Forwarded-Method": "DELETE", "X-Forwarded-Uri": "/orders/7?force=1"}
    )
    assert (answer.status, answer.key_id) == (200, key_id)
