"""No generated secret or private key ever reaches the logs (docs/security.md §2)."""

from __future__ import annotations

import io
import json

from aiohttp.test_utils import TestClient

from service.log_config import REDACTED, redact
from tests.support.api import Api, new_org


async def test_a_whole_lifecycle_logs_no_secret(
    api: Api, client: TestClient, admin_key: str, captured_logs: io.StringIO
) -> None:
    org = new_org()
    handed_out = [admin_key]
    secret_key = await api.generate(org)
    handed_out.append(secret_key["secret"])
    embed = await api.generate(
        org, type="embed", allowed_origins=["https://a.example"], resource="tpl"
    )
    handed_out.append(embed["secret"])
    for algorithm in ("ed25519", "rsa-2048"):
        handed_out.append(
            (await api.generate(org, type="signing", algorithm=algorithm))["private_key"]
        )
    base = f"/v1/orgs/{org}/keys/{secret_key['key']['id']}"
    _, _, rotated = await api.post(f"{base}/rotate", {"grace_period": "0s"})
    handed_out.append(rotated["secret"])
    signing_id = (await api.generate(org, type="signing"))["key"]["id"]
    _, _, rotated_pair = await api.post(f"/v1/orgs/{org}/keys/{signing_id}/rotate", {})
    handed_out.append(rotated_pair["private_key"])
    await api.post(f"{base}/revoke", {"reason": "leaked"})
    # Failures that carry secrets in headers or bodies.
    await client.get(f"{base}", headers={"Authorization": f"Bearer {secret_key['secret']}"})
    await api.post(f"/v1/orgs/{org}/keys", {"name": "x", "type": secret_key["secret"]})
    await api.post(f"/v1/orgs/{org}/keys", {"name": secret_key["secret"], "typ": "secret"})

    logs = captured_logs.getvalue()
    assert '"event": "request"' in logs  # the access log is really captured here
    for secret in handed_out:
        assert secret not in logs
        body = "".join(secret.splitlines()[1:-1])[:40] if "PRIVATE KEY" in secret else secret
        assert body not in logs


def test_redaction_processor_masks_fields_and_values() -> None:
    secret = "sk_live_" + "a" * 49
    event = redact(
        None,
        "info",
        {
            "event": f"got {secret}",
            "secret": "x",
            "private_key": "y",
            "Authorization": "Bearer z",
            "pepper": "p",
            "nested": {"signature": "s", "ok": "fine", "list": [secret]},
            "key_id": "key_123",
        },
    )
    assert event["secret"] == event["private_key"] == event["Authorization"] == REDACTED
    assert event["pepper"] == REDACTED and event["nested"]["signature"] == REDACTED
    assert secret not in json.dumps(event)
    assert event["key_id"] == "key_123" and event["nested"]["ok"] == "fine"
