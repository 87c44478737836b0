"""keyledger_client against the real server: every endpoint, errors, pagination, retries."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiohttp.test_utils import TestClient

from keyledger_client import (
    KeyledgerAPIError,
    KeyledgerClient,
    KeyledgerError,
    KeyledgerTransportError,
    RetryPolicy,
    SyncKeyledgerClient,
)
from keyledger_client.events import Envelope, KeyGenerated, KeyRevoked, to_domain_event
from service.embedded import free_port
from tests.support.api import Api, new_org

QUICK = RetryPolicy(attempts=4, base_delay=0.01, max_delay=0.05)


def base_url(client: TestClient) -> str:
    return str(client.make_url("")).rstrip("/")


def through(
    transport: httpx.AsyncBaseTransport, client: TestClient, admin_key: str
) -> KeyledgerClient:
    """A client whose requests go through ``transport`` (one that loses or refuses some)."""
    http = httpx.AsyncClient(transport=transport)
    return KeyledgerClient(base_url(client), admin_key, retry=QUICK, http=http)


@pytest.fixture
async def kl(client: TestClient, admin_key: str) -> KeyledgerClient:
    async with KeyledgerClient(base_url(client), admin_key, retry=QUICK) as made:
        yield made


async def test_a_key_lifecycle_through_every_command(kl: KeyledgerClient) -> None:
    org = new_org()
    made = await kl.generate_key(
        org, name="Trading Bot", type="secret", scopes=["orders:*"], metadata={"plan": "pro"}
    )
    assert made.secret is not None and made.secret.startswith("sk_live_")
    assert (made.key.name, made.key.status, made.key.scopes) == (
        "Trading Bot",
        "active",
        ["orders:*"],
    )
    key_id = made.key.id

    renamed = await kl.rename_key(org, key_id, "Bot 2")
    assert renamed.key.name == "Bot 2" and renamed.position > made.position
    assert (await kl.disable_key(org, key_id, reason="pause")).key.status == "disabled"
    assert (await kl.enable_key(org, key_id)).key.status == "active"
    rotated = await kl.rotate_key(org, key_id, grace_period="0s")
    assert rotated.secret is not None and rotated.secret != made.secret
    revoked = await kl.revoke_key(org, key_id, "compromised")
    assert revoked.key.status == "revoked"

    fetched = await kl.get_key(org, key_id, min_position=revoked.position)
    assert fetched.status == "revoked" and fetched.version == revoked.key.version
    history = await kl.key_events(org, key_id)
    assert [e.event_type for e in history if isinstance(e, Envelope)] == [
        "KeyGenerated",
        "KeyRenamed",
        "KeyDisabled",
        "KeyEnabled",
        "KeyRotated",
        "KeyRevoked",
    ]
    first = history[0]
    assert isinstance(first, Envelope) and isinstance(to_domain_event(first), KeyGenerated)

    audited = [e async for e in kl.audit(org_id=org, limit=2)]  # 3 pages of 2
    assert [e.position for e in audited] == [e.position for e in history]
    revocations = [e async for e in kl.audit(org_id=org, event_type="KeyRevoked")]
    assert isinstance(to_domain_event(revocations[0]), KeyRevoked)  # type: ignore[arg-type]
    assert (await kl.audit_verify()).ok


async def test_list_keys_walks_every_page(kl: KeyledgerClient) -> None:
    org = new_org()
    made = [await kl.generate_key(org, name=f"k{i}", type="secret") for i in range(5)]
    listed = [key.id async for key in kl.list_keys(org, limit=2)]
    assert listed == [m.key.id for m in reversed(made)]  # newest first, across 3 pages
    assert [k.id async for k in kl.list_keys(org, status="revoked")] == []


async def test_a_list_starts_at_the_cursor_it_is_given(
    kl: KeyledgerClient, client: TestClient, admin_key: str
) -> None:
    org = new_org()
    made = [await kl.generate_key(org, name=f"k{i}", type="secret") for i in range(5)]
    raw = await client.get(
        f"/v1/orgs/{org}/keys",
        params={"limit": "2"},
        headers={"Authorization": f"Bearer {admin_key}"},
    )
    cursor = (await raw.json())["next_cursor"]
    rest = [key.id async for key in kl.list_keys(org, limit=2, cursor=cursor)]
    assert rest == [m.key.id for m in reversed(made[:3])]  # after the first page of two
    with pytest.raises(KeyledgerAPIError) as refused:
        [key async for key in kl.list_keys(org, cursor="zzz")]
    assert (refused.value.status, refused.value.code) == (422, "invalid_cursor")

    history = [e.position async for e in kl.audit(org_id=org)]
    after = [e.position async for e in kl.audit(org_id=org, after=history[1], limit=2)]
    assert after == history[2:]


async def test_a_bad_grace_period_is_named_in_the_refusal(kl: KeyledgerClient) -> None:
    org = new_org()
    made = await kl.generate_key(org, name="rotated", type="secret")
    for wrong in ("8d", "soon"):
        with pytest.raises(KeyledgerAPIError) as refused:
            await kl.rotate_key(org, made.key.id, grace_period=wrong)
        assert (refused.value.status, refused.value.code) == (422, "validation_error")
        assert [problem["loc"] for problem in refused.value.details] == [["grace_period"]]
        assert str(refused.value).endswith("(fields: grace_period)")


async def test_refusals_raise_with_status_code_and_request_id(kl: KeyledgerClient) -> None:
    org = new_org()
    with pytest.raises(KeyledgerAPIError) as missing:
        await kl.get_key(org, "key_01JD0000000000000000000000")
    assert (missing.value.status, missing.value.code) == (404, "key_not_found")
    assert missing.value.request_id

    with pytest.raises(KeyledgerAPIError) as invalid:
        await kl.generate_key(org, name="x", type="secret", expires_on="30d")
    assert (invalid.value.status, invalid.value.code) == (422, "validation_error")
    assert invalid.value.details

    made = await kl.generate_key(org, name="x", type="secret")
    with pytest.raises(KeyledgerAPIError) as stale:
        await kl.rename_key(org, made.key.id, "y", if_match=made.key.version + 5)
    assert (stale.value.status, stale.value.code) == (412, "version_mismatch")


async def test_a_wrong_service_key_is_401(client: TestClient) -> None:
    async with KeyledgerClient(base_url(client), "sk_live_nope", retry=QUICK) as stranger:
        with pytest.raises(KeyledgerAPIError) as refused:
            await stranger.verify(key="sk_live_nope")
    assert refused.value.status == 401


def no_header_in(error: BaseException, *secrets: str) -> None:
    """``error`` names none of ``secrets``, and carries no httpx error that could."""
    text = str(error)
    assert all(secret not in text for secret in secrets), text
    assert error.__cause__ is None and error.__context__ is None


async def test_an_unreachable_keyledger_is_a_transport_error_naming_the_host() -> None:
    port = free_port()  # nothing listens there
    url = f"http://127.0.0.1:{port}"
    async with KeyledgerClient(url, "sk_live_service", retry=QUICK) as kl:
        with pytest.raises(KeyledgerTransportError) as failed:
            await kl.verify(key="sk_live_customer")
    error = failed.value
    assert isinstance(error, KeyledgerError)
    assert (error.host, error.cause, error.attempts) == (
        f"127.0.0.1:{port}",
        "ConnectError",
        QUICK.attempts,
    )
    assert f"127.0.0.1:{port}" in str(error) and "ConnectError" in str(error)
    no_header_in(error, "sk_live_service", "sk_live_customer")
    with (
        SyncKeyledgerClient(url, "sk_live_service", retry=QUICK) as sync,
        pytest.raises(KeyledgerTransportError) as sync_failed,
    ):
        sync.get_key("acme", "key_01JD0000000000000000000000")
    no_header_in(sync_failed.value, "sk_live_service")


async def test_a_header_httpx_cannot_send_is_an_error_without_its_value(
    kl: KeyledgerClient, admin_key: str
) -> None:
    forwarded = "sk_live_customer\nX-Injected: 1"
    with pytest.raises(KeyledgerTransportError) as failed:
        await kl.authorize_headers({"Authorization": f"Bearer {forwarded}"})
    assert (failed.value.cause, failed.value.attempts) == ("LocalProtocolError", 1)  # not retried
    no_header_in(failed.value, admin_key, "sk_live_customer")


class LosesFirstAnswer(httpx.AsyncBaseTransport):
    """The request reaches the server, but the first answer is lost on the way back."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.sent = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent += 1
        response = await self.inner.handle_async_request(request)
        if self.sent == 1:
            await response.aread()
            raise httpx.ReadError("connection reset after the server answered")
        return response


async def test_a_command_whose_answer_was_lost_is_retried_without_doing_it_twice(
    client: TestClient, admin_key: str
) -> None:
    transport = LosesFirstAnswer()
    org = new_org()
    async with through(transport, client, admin_key) as flaky:
        made = await flaky.generate_key(org, name="once", type="secret")
    assert transport.sent == 2
    # The retry was answered from the first attempt's result: one key, one event.
    assert made.replayed is True and made.secret is None
    async with KeyledgerClient(base_url(client), admin_key) as kl:
        keys = [k async for k in kl.list_keys(org)]
    assert [k.id for k in keys] == [made.key.id]


async def test_a_registration_whose_answer_was_lost_makes_one_endpoint(
    client: TestClient, admin_key: str, api: Api
) -> None:
    transport = LosesFirstAnswer()
    org = new_org()
    async with through(transport, client, admin_key) as flaky:
        made = await flaky.register_webhook(org, "https://hooks.example.com/kl", ["KeyRevoked"])
    assert transport.sent == 2
    # The retry was answered from the first attempt's result: the secret is not repeated.
    assert made.replayed is True and made.secret is None
    assert made.webhook.event_types == ["KeyRevoked"]
    _, _, listing = await api.get(f"/v1/orgs/{org}/webhooks")
    assert [w["id"] for w in listing["data"]] == [made.webhook.id]

    async with KeyledgerClient(base_url(client), admin_key, retry=QUICK) as kl:
        removed = await kl.remove_webhook(org, made.webhook.id, on_behalf_of="user:3")
    assert removed.webhook.removed_by is not None
    assert removed.webhook.removed_by.on_behalf_of == "user:3" and removed.replayed is None


class Overloaded(httpx.AsyncBaseTransport):
    """Answers 503 with ``Retry-After`` ``times`` times, then lets requests through."""

    def __init__(self, times: int) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.times = times
        self.seen: list[str | None] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request.headers.get("Idempotency-Key"))
        if len(self.seen) <= self.times:
            body = {"error": {"code": "unavailable", "message": "busy", "request_id": "r1"}}
            return httpx.Response(503, headers={"Retry-After": "0"}, json=body)
        return await self.inner.handle_async_request(request)


async def test_503_is_retried_with_the_same_idempotency_key(
    client: TestClient, admin_key: str
) -> None:
    transport = Overloaded(times=2)
    async with through(transport, client, admin_key) as busy:
        made = await busy.generate_key(new_org(), name="patient", type="secret")
    assert made.secret is not None and made.replayed is None
    assert len(transport.seen) == 3 and len(set(transport.seen)) == 1 and transport.seen[0]

    always = Overloaded(times=10)
    async with through(always, client, admin_key) as hopeless:
        with pytest.raises(KeyledgerAPIError) as gave_up:
            await hopeless.generate_key(new_org(), name="never", type="secret")
    assert (gave_up.value.status, gave_up.value.code, len(always.seen)) == (503, "unavailable", 4)


async def test_verify_and_authorize_headers(kl: KeyledgerClient) -> None:
    org = new_org()
    made = await kl.generate_key(org, name="v", type="secret", scopes=["orders:read"])
    assert made.secret is not None
    ok = await kl.verify(key=made.secret, scopes=["orders:read"])
    assert (ok.valid, ok.code, ok.key and ok.key.id) == (True, "VALID", made.key.id)
    assert (await kl.verify(key=made.secret, scopes=["orders:write"])).code == "INSUFFICIENT_SCOPE"

    allowed = await kl.authorize_headers(
        {"Authorization": f"Bearer {made.secret}"}, scopes=["orders:read"]
    )
    assert (allowed.status, allowed.key_id, allowed.org_id) == (200, made.key.id, org)
    assert allowed.scopes == ["orders:read"]
    denied = await kl.authorize_headers({"Authorization": "Bearer sk_live_x"})
    assert (denied.status, denied.verdict.code) == (401, "MALFORMED")


async def test_the_sync_client_mirrors_the_async_one(client: TestClient, admin_key: str) -> None:
    org = new_org()

    def lifecycle() -> tuple[str, list[str], str, bool]:
        with SyncKeyledgerClient(base_url(client), admin_key, retry=QUICK) as kl:
            made = kl.generate_key(org, name="sync", type="secret")
            kl.generate_key(org, name="sync 2", type="secret")
            assert made.secret is not None
            verdict = kl.verify(key=made.secret)
            listed = [k.name for k in kl.list_keys(org, limit=1)]
            kl.revoke_key(org, made.key.id, "unused")
            events = [e.event_type for e in kl.audit(org_id=org, limit=1)]
            try:
                kl.get_key(org, "key_01JD0000000000000000000000")
            except KeyledgerAPIError as refused:
                code = refused.code
            return verdict.code, listed + events, code, kl.audit_verify().ok

    # The server runs on this event loop: the blocking client runs beside it.
    verdict, names, code, chain_ok = await asyncio.to_thread(lifecycle)
    assert verdict == "VALID" and code == "key_not_found" and chain_ok
    assert names == ["sync 2", "sync", "KeyGenerated", "KeyGenerated", "KeyRevoked"]


async def test_the_sync_client_registers_an_endpoint_once_per_idempotency_key(
    client: TestClient, admin_key: str
) -> None:
    org = new_org()

    def register_twice() -> tuple[Any, Any]:
        with SyncKeyledgerClient(base_url(client), admin_key, retry=QUICK) as kl:
            url, key = "https://hooks.example.com/sync", f"wh-{org}"
            first = kl.register_webhook(org, url, idempotency_key=key)
            return first, kl.register_webhook(org, url, idempotency_key=key)

    first, again = await asyncio.to_thread(register_twice)
    assert first.secret is not None and first.replayed is None
    assert again.webhook == first.webhook and again.secret is None and again.replayed is True


# -- POST /v1/usage ----------------------------------------------------------------


async def test_reported_usage_moves_last_used_at(
    kl: KeyledgerClient, client: TestClient, api: Api
) -> None:
    org = new_org()
    made = await kl.generate_key(org, name="used", type="secret")
    assert made.key.last_used_at is None
    at = datetime.now(UTC) - timedelta(minutes=3)
    answer = await kl.report_usage({made.key.id: at, "key_01JD0000000000000000000000": at})
    assert (answer.recorded, answer.ignored) == (1, 1)
    await flushed(client)
    used = await kl.get_key(org, made.key.id)
    assert used.last_used_at == at.replace(second=0, microsecond=0)

    # Only forward: an older report changes nothing; a future time counts as now.
    await kl.report_usage({made.key.id: at - timedelta(hours=1)})
    await flushed(client)
    assert (await kl.get_key(org, made.key.id)).last_used_at == used.last_used_at
    await kl.report_usage({made.key.id: datetime.now(UTC) + timedelta(days=3)})
    await flushed(client)
    later = (await kl.get_key(org, made.key.id)).last_used_at
    assert later is not None and later <= datetime.now(UTC)


async def flushed(client: TestClient) -> None:
    from service.http.context import KEYLEDGER

    await client.app[KEYLEDGER].usage.flush()


async def test_usage_of_keys_in_orgs_the_caller_cannot_see_is_ignored(
    client: TestClient, api: Api
) -> None:
    org, other = new_org(), new_org()
    mine = await api.generate(org)
    theirs = await api.generate(other)
    limited = await api.generate(
        "_system", scopes=["keys:verify"], metadata={"orgs": [org]}, name="verifier"
    )
    async with KeyledgerClient(base_url(client), limited["secret"], retry=QUICK) as kl:
        now = datetime.now(UTC)
        answer = await kl.report_usage({mine["key"]["id"]: now, theirs["key"]["id"]: now})
    assert (answer.recorded, answer.ignored) == (1, 1)
    await flushed(client)
    status, _, key = await api.get(f"/v1/orgs/{other}/keys/{theirs['key']['id']}")
    assert status == 200 and key["last_used_at"] is None


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"uses": []}, 422, "validation_error"),
        ({"uses": [{"key_id": "nope", "at": "2026-01-01T00:00:00Z"}]}, 422, "validation_error"),
        (
            {"uses": [{"key_id": "key_01JD0000000000000000000000", "at": "2026-01-01T00:00:00"}]},
            422,
            "validation_error",
        ),
        (
            {"uses": [{"key_id": "key_01JD0000000000000000000000", "at": "x"}]},
            422,
            "validation_error",
        ),
        (
            {
                "uses": [{"key_id": "key_01JD0000000000000000000000", "at": "2026-01-01T00:00:00Z"}]
                * 501
            },
            422,
            "validation_error",
        ),
        ({"uses": [], "extra": 1}, 422, "validation_error"),
        ([1, 2], 422, "validation_error"),
    ],
)
async def test_bad_usage_reports_are_refused(
    api: Api, body: object, status: int, code: str
) -> None:
    got, _, answer = await api.post("/v1/usage", body)
    assert (got, answer["error"]["code"]) == (status, code)


async def test_usage_needs_the_verify_scope(client: TestClient, api: Api) -> None:
    reader = await api.generate("_system", scopes=["keys:read"], name="reader")
    raw = await client.post(
        "/v1/usage",
        data=json.dumps(
            {"uses": [{"key_id": "key_01JD0000000000000000000000", "at": "2026-01-01T00:00:00Z"}]}
        ),
        headers={"Authorization": f"Bearer {reader['secret']}", "Content-Type": "application/json"},
    )
    assert raw.status == 403 and (await raw.json())["error"]["code"] == "insufficient_scope"
