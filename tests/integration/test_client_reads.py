"""keyledger_client's reads of webhooks, deliveries, key usage and the caller, against the
real server (the commands and the rest are in test_client_api.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient

from keyledger_client import KeyledgerAPIError, KeyledgerClient, SyncKeyledgerClient
from keyledger_client.events import Envelope
from service.http.context import KEYLEDGER
from tests.integration.test_client_api import QUICK, base_url, flushed
from tests.support.api import new_org

HOOK = "https://hooks.example.com/kl"


@pytest.fixture
async def kl(client: TestClient, admin_key: str) -> KeyledgerClient:
    async with KeyledgerClient(base_url(client), admin_key, retry=QUICK) as made:
        yield made


async def test_registered_endpoints_are_listed_and_read(kl: KeyledgerClient) -> None:
    org = new_org()
    first = await kl.register_webhook(org, HOOK + "/1", ["KeyRevoked"])
    second = await kl.register_webhook(org, HOOK + "/2")
    assert first.position is not None and second.position is not None
    assert second.position > first.position

    listed = await kl.list_webhooks(org)
    assert [w.id for w in listed] == [second.webhook.id, first.webhook.id]  # newest first
    assert listed[1] == first.webhook
    removed = await kl.remove_webhook(org, first.webhook.id)
    assert [w.id for w in await kl.list_webhooks(org)] == [second.webhook.id]
    # A removed endpoint is still there to read, with who removed it.
    assert await kl.get_webhook(org, first.webhook.id) == removed.webhook
    assert removed.webhook.removed_at is not None
    with pytest.raises(KeyledgerAPIError) as missing:
        await kl.get_webhook(new_org(), first.webhook.id)  # another org's endpoint
    assert (missing.value.status, missing.value.code) == (404, "webhook_not_found")


async def test_deliveries_are_read_newest_first_over_every_page(
    kl: KeyledgerClient, client: TestClient
) -> None:
    org = new_org()
    # Subscribed to revocations only: nothing here is delivered by keyledger itself.
    hook = (await kl.register_webhook(org, HOOK, ["KeyRevoked"])).webhook
    assert [d async for d in kl.webhook_deliveries(org, hook.id)] == []

    made = await kl.generate_key(org, name="delivered", type="secret")
    event = (await kl.key_events(org, made.key.id))[0]
    assert isinstance(event, Envelope)
    attempts = client.app[KEYLEDGER].deliveries
    start = datetime.now(UTC)
    for attempt in (1, 2, 3):
        at = start + timedelta(seconds=attempt)
        outcome = "delivered" if attempt == 3 else "failed"
        status = 204 if attempt == 3 else 500
        error = None if attempt == 3 else "HTTP 500"
        await attempts.record(
            hook.id, event, attempt=attempt, at=at, outcome=outcome, status_code=status, error=error
        )

    read = [d async for d in kl.webhook_deliveries(org, hook.id, limit=2)]  # pages of 2, 1
    assert [d.attempt for d in read] == [3, 2, 1]
    assert [d.outcome for d in read] == ["delivered", "failed", "failed"]
    assert read[0].id > read[1].id > read[2].id
    assert (read[1].status_code, read[1].error, read[1].position) == (
        500,
        "HTTP 500",
        event.position,
    )
    assert read[0].event_id == str(event.event_id) and read[0].key_id == made.key.id
    assert read[2].attempted_at == start + timedelta(seconds=1)


async def test_key_usage_counts_the_verifications(kl: KeyledgerClient, client: TestClient) -> None:
    org = new_org()
    made = await kl.generate_key(org, name="counted", type="secret", scopes=["orders:read"])
    assert made.secret is not None
    for _ in range(2):
        assert (await kl.verify(key=made.secret)).valid
    assert (await kl.verify(key=made.secret, scopes=["orders:write"])).code == "INSUFFICIENT_SCOPE"
    await flushed(client)  # counts reach the table at each flush

    usage = await kl.key_usage(org, made.key.id, granularity="minute")
    assert usage.granularity == "minute" and usage.series
    assert sum(b.valid for b in usage.series) == 2 and sum(b.denied for b in usage.series) == 1
    assert all(b.t.tzinfo is not None and b.t.second == 0 for b in usage.series)

    until = datetime.now(UTC)
    hours = await kl.key_usage(org, made.key.id, until - timedelta(hours=2), until)
    assert hours.granularity == "hour" and len(hours.series) == 3  # the server's default
    with pytest.raises(KeyledgerAPIError) as naive:
        await kl.key_usage(org, made.key.id, since=datetime(2026, 1, 1))
    assert (naive.value.status, naive.value.code) == (422, "invalid_timestamp")


async def test_me_is_the_key_the_client_calls_with(kl: KeyledgerClient) -> None:
    org = new_org()
    registered = await kl.register_webhook(org, HOOK)
    caller = await kl.me()
    assert registered.webhook.created_by is not None
    assert caller.id == registered.webhook.created_by.id and "admin" in caller.scopes


async def test_the_sync_client_reads_the_same(client: TestClient, admin_key: str) -> None:
    org = new_org()

    def reads() -> tuple[str, list[str], int, str]:
        with SyncKeyledgerClient(base_url(client), admin_key, retry=QUICK) as kl:
            hook = kl.register_webhook(org, HOOK, ["KeyRevoked"]).webhook
            made = kl.generate_key(org, name="sync", type="secret")
            assert made.secret is not None
            kl.verify(key=made.secret)
            listed = [w.id for w in kl.list_webhooks(org)]
            assert kl.get_webhook(org, hook.id) == hook
            assert list(kl.webhook_deliveries(org, hook.id)) == []
            usage = kl.key_usage(org, made.key.id, granularity="minute")
            return hook.id, listed, len(usage.series), kl.me().id

    hook_id, listed, buckets, caller = await asyncio.to_thread(reads)
    assert listed == [hook_id] and buckets >= 60 and caller.startswith("key_")
