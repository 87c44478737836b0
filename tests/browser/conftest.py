"""One headless chromium per module, driven by Playwright against the session's live app.

The browser is Debian's chromium (``apt-get install chromium``, as ``.ci/run``
does); Playwright's own browser download is never used. Without chromium the
browser tests skip on a laptop, and fail in CI (``CI=true``), where it must be.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = os.environ.get("KEYLEDGER_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def _chromium_or_skip() -> str:
    if os.path.exists(CHROMIUM):
        return CHROMIUM
    reason = f"chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Browser]:
    executable = _chromium_or_skip()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=executable, chromium_sandbox=False, headless=True
        )
        yield launched
        await launched.close()


@pytest.fixture
async def page(browser: Browser, client: TestClient) -> AsyncIterator[Page]:
    """A fresh tab (own storage) on the live app, clipboard allowed."""
    base = str(client.make_url("")).rstrip("/")
    context = await browser.new_context(base_url=base, viewport={"width": 1280, "height": 860})
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=base)
    tab = await context.new_page()
    yield tab
    await context.close()
