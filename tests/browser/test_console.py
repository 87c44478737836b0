"""The console in a real browser: sign in, generate, copy, rename, disable, enable, revoke,
live updates, refusals as people expect them, keyboard-only use, and no secret kept where
it could leak (cookies, local storage, URLs)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from aiohttp.test_utils import TestClient
from playwright.async_api import Locator, Page, Request, expect

from service.settings import Settings
from tests.support.api import Api, new_org, service_key

SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "console"


async def snap(page: Page, name: str) -> None:
    """Save the page for docs/console.md when KEYLEDGER_CONSOLE_SCREENSHOTS=1."""
    if os.environ.get("KEYLEDGER_CONSOLE_SCREENSHOTS") == "1":
        await page.screenshot(path=SCREENSHOTS / f"{name}.png")


async def sign_in(page: Page, key: str, org: str | None = None) -> None:
    await page.goto("/console")
    await page.get_by_role("textbox", name="Service key").fill(key)
    await page.get_by_role("button", name="Sign in").click()
    if org is not None:
        await expect(page.get_by_role("heading", name="Choose an org")).to_be_visible()
        await page.goto(f"/console/orgs/{org}")
        await expect(page.get_by_role("heading", name=f"API keys of {org}")).to_be_visible()


def row(page: Page, name: str) -> Locator:
    return page.get_by_role("row").filter(has=page.get_by_role("link", name=name, exact=True))


async def generate(page: Page, name: str, **choices: str) -> str:
    """Generate through the dialog; the secret or private key shown once."""
    await page.get_by_role("button", name="Generate API key").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("textbox", name="Name").fill(name)
    for label, option in choices.items():
        await dialog.get_by_label(label.replace("_", " ").capitalize()).select_option(label=option)
    await dialog.get_by_role("button", name="Generate").click()
    shown = page.get_by_role("textbox", name=re.compile("^(Secret|Private key)$"))
    await expect(shown).to_be_visible()
    return await shown.input_value()


async def choose(page: Page, name: str, item: str) -> None:
    await page.get_by_role("button", name=f"Actions for {name}").click()
    await page.get_by_role("menuitem", name=item).click()


async def test_sign_in_refuses_a_wrong_key_then_opens_the_org_picker(
    page: Page, admin_key: str
) -> None:
    await page.goto("/console")
    await snap(page, "sign-in")
    await page.get_by_role("textbox", name="Service key").fill("sk_live_not-a-key")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_contain_text("well-formed key")
    org = new_org()
    await page.get_by_role("textbox", name="Service key").fill(admin_key)
    await page.get_by_role("button", name="Sign in").click()
    await page.get_by_role("textbox", name="Org").fill(org)
    await page.get_by_role("button", name="Open").click()
    await expect(page.get_by_role("heading", name=f"API keys of {org}")).to_be_visible()
    await expect(page).to_have_url(re.compile(f"/console/orgs/{org}$"))


async def test_a_key_for_one_org_goes_straight_to_it(
    page: Page, client: TestClient, settings: Settings
) -> None:
    org = new_org()
    key = await service_key(client, settings, ["keys:read", "keys:write"], orgs=[org])
    await sign_in(page, key)
    await expect(page.get_by_role("heading", name=f"API keys of {org}")).to_be_visible()


async def test_generate_each_type_and_copy_the_secret(page: Page, admin_key: str) -> None:
    org = new_org()
    await sign_in(page, admin_key, org)
    secret = await generate(page, "Trading Bot", expiration="90 days")
    assert re.fullmatch(r"sk_live_[0-9A-Za-z]{49}", secret)
    await snap(page, "secret")
    await page.get_by_role("button", name="Copy").click()
    await expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == secret
    await page.get_by_role("button", name="Done").click()
    await expect(row(page, "Trading Bot")).to_contain_text("Active")
    await expect(row(page, "Trading Bot")).to_contain_text("in 3 months")

    await page.get_by_role("button", name="Generate API key").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("textbox", name="Name").fill("Widget")
    await dialog.get_by_label("Type").select_option("embed")
    await dialog.get_by_label("Environment").select_option("test")
    await dialog.get_by_role("textbox", name="Allowed origins").fill("https://app.example.com")
    await dialog.get_by_role("textbox", name="Resource").fill("template-7")
    await snap(page, "generate")
    await dialog.get_by_role("button", name="Generate").click()
    embed = page.get_by_role("textbox", name="Secret")
    assert (await embed.input_value()).startswith("rk_test_")
    await page.get_by_role("button", name="Done").click()

    private_key = await generate(page, "Signer", type="Signing (key pair)", algorithm="RSA 2048")
    assert private_key.startswith("-----BEGIN PRIVATE KEY-----")
    await page.get_by_role("button", name="Done").click()
    for name in ("Trading Bot", "Widget", "Signer"):
        await expect(row(page, name)).to_contain_text("Active")
    await expect(row(page, "Signer")).to_contain_text("signing · live")
    await snap(page, "keys")


async def test_a_field_error_is_shown_next_to_its_field(page: Page, admin_key: str) -> None:
    await sign_in(page, admin_key, new_org())
    await page.get_by_role("button", name="Generate API key").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("textbox", name="Name").fill("Widget")
    await dialog.get_by_label("Type").select_option("embed")
    await dialog.get_by_role("textbox", name="Resource").fill("template-7")
    await dialog.get_by_role("button", name="Generate").click()
    origins = dialog.get_by_role("textbox", name="Allowed origins")
    await expect(origins).to_have_attribute("aria-invalid", "true")
    await expect(dialog.locator("#f-allowed-origins-error")).to_be_visible()
    await expect(dialog.get_by_role("alert")).to_be_visible()


async def test_rename_disable_enable_rotate_revoke(page: Page, admin_key: str, api: Api) -> None:
    org = new_org()
    await api.generate(org, name="Old name")
    await sign_in(page, admin_key, org)
    await choose(page, "Old name", "Rename")
    await page.get_by_role("dialog").get_by_role("textbox", name="Name").fill("New name")
    await page.get_by_role("dialog").get_by_role("button", name="Rename").click()
    await expect(row(page, "New name")).to_contain_text("Active")
    # The focus goes back to the row's actions, not to the top of the page.
    await expect(page.get_by_role("button", name="Actions for New name")).to_be_focused()

    await choose(page, "New name", "Disable")
    await expect(row(page, "New name")).to_contain_text("Disabled")
    await choose(page, "New name", "Enable")
    await expect(row(page, "New name")).to_contain_text("Active")

    await choose(page, "New name", "Rotate")
    await page.get_by_role("dialog").get_by_label("Grace period").select_option("1h")
    await page.get_by_role("dialog").get_by_role("button", name="Rotate").click()
    rotated = await page.get_by_role("textbox", name="Secret").input_value()
    assert rotated.startswith("sk_live_")
    await page.get_by_role("button", name="Done").click()

    await choose(page, "New name", "Revoke")
    dialog = page.get_by_role("dialog")
    await dialog.get_by_label("I understand that this cannot be undone").check()
    await dialog.get_by_role("button", name="Revoke").click()  # no reason is chosen for you
    await expect(dialog.get_by_text("Choose the reason for revoking this key.")).to_be_visible()
    await dialog.get_by_label("I understand that this cannot be undone").uncheck()
    await dialog.get_by_label("Reason").select_option("leaked")
    await dialog.get_by_role("button", name="Revoke").click()
    await expect(dialog.get_by_role("alert")).to_be_visible()  # not confirmed yet
    await dialog.get_by_label("I understand that this cannot be undone").check()
    await dialog.get_by_role("button", name="Revoke").click()
    await expect(row(page, "New name")).to_contain_text("Revoked")
    # A revoked key has no actions left: the focus goes to its row's link.
    await expect(row(page, "New name").get_by_role("link", name="New name")).to_be_focused()

    await row(page, "New name").get_by_role("link", name="New name").click()
    timeline = page.get_by_role("list", name="Audit timeline")
    for step in ("Generated", "Renamed", "Disabled", "Enabled", "Rotated", "Revoked"):
        await expect(timeline).to_contain_text(step)
    await expect(timeline).to_contain_text("Reason: Leaked")
    await expect(timeline).to_contain_text("“Old name” → “New name”")
    await expect(page.locator("dl.details")).to_contain_text("Revoked")
    await snap(page, "key")


async def test_a_key_revoked_elsewhere_changes_its_row_live(
    page: Page, admin_key: str, api: Api
) -> None:
    org = new_org()
    made = await api.generate(org, name="Watched")
    await sign_in(page, admin_key, org)
    await expect(row(page, "Watched")).to_contain_text("Active")
    await expect(page.get_by_text("● Live")).to_be_visible()
    status, _, _ = await api.post(
        f"/v1/orgs/{org}/keys/{made['key']['id']}/revoke", {"reason": "compromised"}
    )
    assert status == 200
    await expect(row(page, "Watched")).to_contain_text("Revoked", timeout=1000)
    await api.generate(org, name="Made elsewhere")
    await expect(row(page, "Made elsewhere")).to_contain_text("Active")


async def test_the_active_key_limit_is_explained(
    page: Page, admin_key: str, api: Api, settings: Settings
) -> None:
    org = new_org()
    for n in range(settings.max_active_keys_per_org):
        await api.generate(org, name=f"key {n}")
    await sign_in(page, admin_key, org)
    await page.get_by_role("button", name="Generate API key").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("textbox", name="Name").fill("one too many")
    await dialog.get_by_role("button", name="Generate").click()
    await expect(dialog.get_by_role("alert")).to_contain_text(
        f"You can have up to {settings.max_active_keys_per_org} active keys"
    )


async def press_until_focused(page: Page, name: str, key: str = "Tab") -> None:
    """Press ``key`` until the element named ``name`` has the focus (at most 60 presses)."""
    for _ in range(60):
        focused = await page.evaluate(
            "(e => (e.getAttribute('aria-label') || (e.labels && e.labels.length &&"
            " e.labels[0].textContent) || e.textContent || '').trim())(document.activeElement)"
        )
        if focused == name:
            return
        await page.keyboard.press(key)
    raise AssertionError(f"{name!r} never got the focus")


async def test_keyboard_only_generate_and_revoke(page: Page, admin_key: str) -> None:
    org = new_org()
    await page.goto("/console")
    await expect(page.get_by_role("textbox", name="Service key")).to_be_focused()
    await page.keyboard.type(admin_key)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("textbox", name="Org")).to_be_focused()
    await page.keyboard.type(org)
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("heading", name=f"API keys of {org}")).to_be_visible()

    await press_until_focused(page, "Generate API key")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("textbox", name="Name")).to_be_focused()
    await page.keyboard.type("Keyboard key")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("textbox", name="Secret")).to_be_visible()
    await press_until_focused(page, "Done")
    await page.keyboard.press("Enter")
    await expect(row(page, "Keyboard key")).to_contain_text("Active")

    await press_until_focused(page, "Actions for Keyboard key")
    await page.keyboard.press("Enter")
    # Each key waits for what the one before opened (a key pressed before the menu or
    # the dialog is there goes elsewhere: a CI run under load did that once).
    await expect(page.get_by_role("menuitem").first).to_be_focused()
    await page.keyboard.press("ArrowUp")  # from the first item round to the last: Revoke
    await expect(page.get_by_role("menuitem", name="Revoke")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("dialog", name="Revoke Keyboard key")).to_be_visible()
    await press_until_focused(page, "Reason")
    await page.keyboard.press("ArrowDown")
    await press_until_focused(page, "I understand that this cannot be undone")
    await page.keyboard.press("Space")
    await press_until_focused(page, "Revoke")
    await page.keyboard.press("Enter")
    await expect(row(page, "Keyboard key")).to_contain_text("Revoked")
    await expect(row(page, "Keyboard key").get_by_role("link", name="Keyboard key")).to_be_focused()


async def test_no_secret_in_cookies_local_storage_or_urls(
    page: Page, admin_key: str, client: TestClient
) -> None:
    urls: list[str] = []

    def seen(request: Request) -> None:
        urls.append(request.url)
        urls.extend(v for k, v in request.headers.items() if k.lower() in ("referer", "cookie"))

    page.on("request", seen)
    await sign_in(page, admin_key, new_org())
    secret = await generate(page, "Kept nowhere")
    await page.get_by_role("button", name="Download").click()
    await page.get_by_role("button", name="Done").click()
    await expect(row(page, "Kept nowhere")).to_contain_text("Active")
    assert await page.context.cookies() == []
    assert await page.evaluate("localStorage.length") == 0
    assert await page.evaluate("Object.values(sessionStorage)") == [admin_key]
    assert all(admin_key not in url and secret not in url for url in urls)
    assert admin_key not in page.url and secret not in page.url
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.get_by_role("button", name="Sign in")).to_be_visible()
    assert await page.evaluate("sessionStorage.length") == 0


async def test_the_table_is_paged_and_sorted(page: Page, admin_key: str, api: Api) -> None:
    org = new_org()
    made = [await api.generate(org, name=f"key {n:02}", environment="live") for n in range(10)]
    made += [await api.generate(org, name=f"key {n:02}", environment="test") for n in range(10, 20)]
    status, _, _ = await api.post(
        f"/v1/orgs/{org}/keys/{made[0]['key']['id']}/revoke", {"reason": "unused"}
    )
    assert status == 200
    await api.generate(org, name="key 20")
    await sign_in(page, admin_key, org)
    body = page.get_by_role("rowgroup").nth(1)
    await expect(body.get_by_role("row")).to_have_count(20)
    await expect(body.get_by_role("row").first).to_contain_text("key 20")  # newest first
    await page.get_by_role("button", name="Next page").click()
    await expect(page.get_by_text("Page 2")).to_be_visible()
    await expect(body.get_by_role("row")).to_have_count(1)
    await expect(row(page, "key 00")).to_contain_text("Revoked")
    await page.get_by_role("button", name="Previous page").click()
    await expect(body.get_by_role("row")).to_have_count(20)
    await page.get_by_role("button", name="Name").click()  # sorted by name, descending
    await expect(page.get_by_role("columnheader", name="Name")).to_have_attribute(
        "aria-sort", "descending"
    )
    await expect(body.get_by_role("row").first).to_contain_text("key 20")
    await page.get_by_role("button", name="Name").click()
    await expect(body.get_by_role("row").first).to_contain_text("key 01")


async def test_console_pages_carry_a_strict_policy(client: TestClient) -> None:
    for path in ("/console", "/console/orgs/acme", "/console/assets/console.js"):
        response = await client.get(path)
        assert response.status == 200
        policy = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"
        assert response.headers["Referrer-Policy"] == "no-referrer"
    page = await (await client.get("/console")).text()
    assert "<script>" not in page and "style=" not in page and "<style" not in page
    missing = await client.get("/console/assets/..%2Fconsole_routes.py")
    assert missing.status == 404


async def test_the_console_has_only_the_keys_authority(
    page: Page, client: TestClient, settings: Settings, api: Api
) -> None:
    org = new_org()
    await api.generate(org, name="Look only")
    reader = await service_key(client, settings, ["keys:read"], orgs=[org])
    await sign_in(page, reader)
    await expect(row(page, "Look only")).to_contain_text("Active")
    await page.get_by_role("button", name="Generate API key").click()
    dialog = page.get_by_role("dialog")
    await dialog.get_by_role("textbox", name="Name").fill("Not allowed")
    await dialog.get_by_role("button", name="Generate").click()
    await expect(dialog.get_by_role("alert")).to_contain_text("keys:write")
    await dialog.get_by_role("button", name="Cancel").click()
    await choose(page, "Look only", "Disable")
    await expect(page.get_by_role("alert")).to_contain_text("keys:write")
    await expect(row(page, "Look only")).to_contain_text("Active")
