"""``POST /v1/leaks``: GitHub-format leak reports, signed with a key pair the test makes."""

from __future__ import annotations

import base64
import hashlib
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.domain.key_material import new_secret
from service.settings import Settings
from tests.support import hostile
from tests.support.api import Api, new_org
from tests.support.replicas import in_process_replica

KEY_ID = "90a421169f0a406205f1563a953312f0be898d3c7b6c06b681aa86a874555f4a"


class Scanner:
    """Signs reports as GitHub does: ECDSA P-256, SHA-256, base64 DER."""

    def __init__(self) -> None:
        self.private_key = ec.generate_private_key(ec.SECP256R1())

    def public_pem(self) -> str:
        return (
            self.private_key.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def sign(self, body: bytes) -> str:
        return base64.b64encode(self.private_key.sign(body, ec.ECDSA(hashes.SHA256()))).decode()


SCANNER = Scanner()
FORGER = Scanner()


@pytest.fixture(scope="module")
def keys_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("leaks") / "github_keys.json"
    path.write_text(
        json.dumps(
            {
                "public_keys": [
                    {"key_identifier": KEY_ID, "key": SCANNER.public_pem(), "is_current": True},
                    {"key_identifier": "old", "key": "not a pem", "is_current": False},
                ]
            }
        )
    )
    return path


@pytest.fixture
async def reporter(settings: Settings, keys_file: Path) -> AsyncIterator[TestClient]:
    async with in_process_replica(settings, leak_report_keys=keys_file) as client:
        yield client


async def report(
    client: TestClient,
    entries: Any,
    *,
    signer: Scanner = SCANNER,
    key_id: str = KEY_ID,
    body: bytes | None = None,
    request_id: str | None = None,
) -> tuple[int, Any]:
    raw = body if body is not None else json.dumps(entries).encode()
    response = await client.post(
        "/v1/leaks",
        data=raw,
        headers={
            "Content-Type": "application/json",
            "GitHub-Public-Key-Identifier": key_id,
            "GitHub-Public-Key-Signature": signer.sign(raw),
            **({"X-Request-Id": request_id} if request_id else {}),
        },
    )
    return response.status, await response.json()


async def key_events(pool: asyncpg.Pool, key_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT event_type, data::text AS data, actor ->> 'id' AS actor FROM events"
        " WHERE key_id = $1 ORDER BY position",
        key_id,
    )


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def test_a_leaked_live_key_is_revoked_once(
    reporter: TestClient, api: Api, pool: asyncpg.Pool
) -> None:
    issued = await api.generate(new_org())
    secret, key_id = issued["secret"], issued["key"]["id"]
    unknown = new_secret("secret", "live")  # well-formed, checksummed, nobody's
    entries = [
        {"token": secret, "type": "keyledger_secret", "url": "https://github.com/o/r/blob/m/.env",
         "source": "content"},
        {"token": "sk_live_garbage", "type": "keyledger_secret", "url": "https://x", "source": "c"},
        {"token": unknown, "type": "keyledger_secret", "url": "https://x", "source": "c"},
    ]  # fmt: skip
    status, answer = await report(reporter, entries)
    assert status == 200, answer
    assert answer == [
        {"token_hash": sha(secret), "token_type": "keyledger_secret", "label": "true_positive"},
        {"token_hash": sha("sk_live_garbage"), "token_type": "keyledger_secret",
         "label": "false_positive"},
        {"token_hash": sha(unknown), "token_type": "keyledger_secret", "label": "false_positive"},
    ]  # fmt: skip
    assert secret not in json.dumps(answer)
    events = await key_events(pool, key_id)
    assert [(e["event_type"], e["actor"]) for e in events[1:]] == [
        ("KeyRevoked", "keyledger:leak-report")
    ]
    revoked = json.loads(events[-1]["data"])
    assert revoked == {"reason": "leaked", "leak_url": "https://github.com/o/r/blob/m/.env"}
    assert events[-1]["actor"] == "keyledger:leak-report"

    # The same report again (GitHub retries): the same answer, nothing written.
    again_status, again = await report(reporter, entries)
    assert (again_status, again) == (200, answer)
    assert len(await key_events(pool, key_id)) == len(events)


async def test_forged_tampered_and_unsigned_reports_are_refused(
    reporter: TestClient, api: Api, pool: asyncpg.Pool
) -> None:
    issued = await api.generate(new_org())
    entries = [{"token": issued["secret"], "type": "t", "url": "https://x", "source": "c"}]
    raw = json.dumps(entries).encode()
    cases = [
        await report(reporter, entries, signer=FORGER),
        await report(reporter, entries, key_id="unknown-identifier"),
    ]
    tampered = await reporter.post(
        "/v1/leaks",
        data=raw + b" ",
        headers={
            "Content-Type": "application/json",
            "GitHub-Public-Key-Identifier": KEY_ID,
            "GitHub-Public-Key-Signature": SCANNER.sign(raw),
        },
    )
    cases.append((tampered.status, await tampered.json()))
    for headers in (
        {},
        {"GitHub-Public-Key-Identifier": KEY_ID},
        {"GitHub-Public-Key-Identifier": KEY_ID, "GitHub-Public-Key-Signature": "%%%not-base64"},
        {"GitHub-Public-Key-Identifier": KEY_ID, "GitHub-Public-Key-Signature": "AAAA"},
    ):
        response = await reporter.post(
            "/v1/leaks", data=raw, headers={"Content-Type": "application/json", **headers}
        )
        cases.append((response.status, await response.json()))
    for status, body in cases:
        assert (status, body["error"]["code"]) == (401, "invalid_signature"), body
        assert issued["secret"] not in json.dumps(body)
    assert [e["event_type"] for e in await key_events(pool, issued["key"]["id"])] == [
        "KeyGenerated"
    ]


@pytest.mark.parametrize(("action", "expected"), [("disable", "KeyDisabled"), ("report", None)])
async def test_the_action_is_a_setting(
    settings: Settings, keys_file: Path, api: Api, pool: asyncpg.Pool, action: str, expected: Any
) -> None:
    issued = await api.generate(new_org())
    async with in_process_replica(
        settings, leak_report_keys=keys_file, leak_action=action
    ) as client:
        status, answer = await report(
            client, [{"token": issued["secret"], "type": "t", "url": "https://x/y", "source": "c"}]
        )
    assert status == 200 and answer[0]["label"] == "true_positive"
    events = await key_events(pool, issued["key"]["id"])
    assert [e["event_type"] for e in events[1:]] == ([expected] if expected else [])
    if expected:
        assert json.loads(events[-1]["data"])["leak_url"] == "https://x/y"


async def test_without_configured_keys_leak_reports_are_not_found(client: TestClient) -> None:
    response = await client.post("/v1/leaks", json=[])
    assert response.status == 404
    assert (await response.json())["error"]["code"] == "not_found"


async def test_malformed_signed_reports_are_422(reporter: TestClient) -> None:
    for body in (b"{}", b'"x"', b'[{"token": 1, "type": "t"}]', b"[{}]", b"[1]", b"not json"):
        status, answer = await report(reporter, None, body=body)
        assert status in (400, 422), (body, answer)
    status, answer = await report(reporter, [])
    assert (status, answer) == (200, [])


@settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    entries=st.one_of(
        hostile.json_values,
        st.lists(
            st.fixed_dictionaries(
                {"token": hostile.texts, "type": hostile.texts},
                optional={"url": hostile.texts, "source": hostile.json_values},
            ),
            max_size=4,
        ),
    )
)
async def test_hostile_signed_reports_get_a_clear_answer(
    reporter: TestClient, entries: Any
) -> None:
    status, answer = await report(reporter, entries)
    assert status in (200, 400, 422), (status, answer)
    if status == 200:
        assert all(item["label"] == "false_positive" for item in answer)


def github_entry(token: str, number: int) -> dict[str, str]:
    """An entry as GitHub sends it: a URL to the file at a commit (about 250 bytes in all)."""
    commit = hashlib.sha1(str(number).encode()).hexdigest()
    return {
        "token": token,
        "type": "keyledger_secret",
        "url": f"https://github.com/some-organisation/some-repository/blob/{commit}"
        f"/services/payments/config/settings_{number}.py",
        "source": "content",
    }


async def test_a_report_of_1000_github_entries_is_taken_whole(
    reporter: TestClient, api: Api, pool: asyncpg.Pool
) -> None:
    """The documented 1000 tokens fit: the body is far over the API's 64 KiB."""
    issued = await api.generate(new_org())
    entries = [github_entry(f"sk_live_{number:040d}", number) for number in range(999)]
    entries.append(github_entry(issued["secret"], 999))
    assert len(json.dumps(entries)) > 200 * 1000
    status, answer = await report(reporter, entries)
    assert status == 200, answer
    assert len(answer) == 1000
    assert answer[-1]["label"] == "true_positive"
    assert [e["event_type"] for e in await key_events(pool, issued["key"]["id"])] == [
        "KeyGenerated",
        "KeyRevoked",
    ]
    # Its own limit still stands: a body over 1 MiB is refused before any work.
    status, answer = await report(reporter, None, body=b"[" + b" " * (1024 * 1024) + b"]")
    assert (status, answer["error"]["code"]) == (413, "payload_too_large")


async def test_an_unparsable_published_key_is_503_and_logged_by_its_identifier(
    reporter: TestClient, captured_logs: io.StringIO
) -> None:
    logged_before = len(captured_logs.getvalue())
    status, answer = await report(reporter, [], key_id="old")  # its "key" is "not a pem"
    assert (status, answer["error"]["code"]) == (503, "unavailable"), answer
    lines = [json.loads(line) for line in captured_logs.getvalue()[logged_before:].splitlines()]
    unreadable = [line for line in lines if line.get("event") == "leak_report_keys_unreadable"]
    assert unreadable and unreadable[0]["key_identifier"] == "old"
    assert "not a pem" not in captured_logs.getvalue()[logged_before:]


async def test_a_leak_revocation_carries_the_reports_request_id(
    reporter: TestClient, api: Api, pool: asyncpg.Pool, captured_logs: io.StringIO
) -> None:
    issued = await api.generate(new_org())
    logged_before = len(captured_logs.getvalue())
    status, _ = await report(
        reporter, [github_entry(issued["secret"], 1)], request_id="req_github_delivery_7"
    )
    assert status == 200
    actor = await pool.fetchval(
        "SELECT actor::text FROM events WHERE key_id = $1 AND event_type = 'KeyRevoked'",
        issued["key"]["id"],
    )
    assert json.loads(actor) == {
        "id": "keyledger:leak-report",
        "on_behalf_of": None,
        "request_id": "req_github_delivery_7",
    }
    lines = [json.loads(line) for line in captured_logs.getvalue()[logged_before:].splitlines()]
    reported = [line for line in lines if line.get("event") == "leak_reported"]
    assert [line["request_id"] for line in reported] == ["req_github_delivery_7"]
