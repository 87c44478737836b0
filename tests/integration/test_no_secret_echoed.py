"""No error message, detail or log line repeats a secret (docs/security.md §2; issue 9, class 7)."""

from __future__ import annotations

import io
from typing import Any

from aiohttp.test_utils import TestClient

from service.domain import key_material
from tests.support.api import Api, new_org
from tests.support.raw_http import raw_request


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
