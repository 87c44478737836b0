"""The console's live badge tells the truth: a stalled stream reconnects, and a service
key revoked while signed in signs the person out with a clear message.

These run against a replica whose streams beat every 0.4 s, so a stall (no byte for
two and a half beats) shows within a second or so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient, TestServer
from playwright.async_api import Browser, Page, expect

from service.http import event_stream_routes
from service.http.app import create_app
from service.http.context import KEYLEDGER
from service.settings import Settings
from tests.browser.test_console import row, sign_in
from tests.support.api import Api, new_org, service_key


@pytest.fixture(scope="module")
async def beating(settings: Settings) -> AsyncIterator[TestClient]:
    """A second replica whose event streams beat every 0.4 s."""
    fast = settings.model_copy(update={"event_stream_heartbeat_seconds": 0.4})
    async with TestClient(TestServer(create_app(fast))) as replica:
        yield replica


@pytest.fixture
async def tab(browser: Browser, beating: TestClient) -> AsyncIterator[Page]:
    base = str(beating.make_url("")).rstrip("/")
    context = await browser.new_context(base_url=base)
    yield await context.new_page()
    await context.close()


async def test_a_stalled_stream_reconnects_and_catches_up(
    tab: Page, admin_key: str, api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A lost network seldom fails an open fetch: the bytes just stop. Chromium's offline
    # emulation leaves open streams flowing, so the silence is made at the server: its
    # streams send their headers, then nothing, not even heartbeats.
    async def silent(*_: object) -> None:
        await asyncio.Event().wait()

    org = new_org()
    await api.generate(org, name="Before")
    with monkeypatch.context() as patched:
        patched.setattr(event_stream_routes, "_follow", silent)
        await sign_in(tab, admin_key, org)
        await expect(tab.locator("#live")).to_have_text("● Live")  # connected, then silent
        await expect(tab.locator("#live")).to_have_text("Reconnecting…")
        await api.generate(org, name="While silent")
    await expect(tab.locator("#live")).to_have_text("● Live")
    # Resumed with Last-Event-ID, or reloaded: the key made meanwhile shows without a reload.
    await expect(row(tab, "While silent")).to_contain_text("Active")


async def test_a_revoked_service_key_signs_out_with_a_clear_message(
    tab: Page, beating: TestClient, api: Api, settings: Settings
) -> None:
    org = new_org()
    secret = await service_key(beating, settings, ["keys:read", "keys:write"], [org])
    await tab.goto("/console")
    await tab.get_by_role("textbox", name="Service key").fill(secret)
    await tab.get_by_role("button", name="Sign in").click()
    await expect(tab.get_by_role("heading", name=f"API keys of {org}")).to_be_visible()
    await expect(tab.locator("#live")).to_have_text("● Live")
    key_id = beating.app[KEYLEDGER].callers.recognised(secret).key_id
    status, _, _ = await api.post(f"/v1/orgs/_system/keys/{key_id}/revoke", {"reason": "other"})
    assert status == 200
    await expect(tab.get_by_role("alert")).to_have_text(
        "This service key is no longer valid: sign in again."
    )
    await expect(tab.get_by_role("heading", name="Sign in")).to_be_visible()
    assert await tab.evaluate("sessionStorage.length") == 0
