"""keyledger_client against the real server: PATCH, bulk revocation, identities."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp.test_utils import TestClient

from keyledger_client import KeyledgerAPIError, KeyledgerClient, SyncKeyledgerClient
from keyledger_client.events import Envelope, NamedRateLimit
from tests.integration.test_client_api import QUICK, base_url
from tests.support.api import new_org


@pytest.fixture
async def kl(client: TestClient, admin_key: str) -> KeyledgerClient:
    async with KeyledgerClient(base_url(client), admin_key, retry=QUICK) as made:
        yield made


async def test_update_key_changes_each_aspect_given_and_honours_if_match(
    kl: KeyledgerClient,
) -> None:
    org = new_org()
    made = await kl.generate_key(org, name="bot", type="secret", scopes=["a"])
    key_id = made.key.id
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)

    changed = await kl.update_key(
        org,
        key_id,
        scopes=["a", "b"],
        rate_limits=[{"name": "burst", "limit": 5, "window": "1s"}],
        credits={"remaining": 10},
        allowed_cidrs=["10.0.0.0/8"],
        identity_id="customer-7",
        expires_at=soon,
        if_match=made.key.version,
    )
    key = changed.key
    assert key.scopes == ["a", "b"] and key.identity_id == "customer-7"
    assert key.rate_limits == [NamedRateLimit(name="burst", limit=5, window="1s")]
    assert key.credits is not None and key.credits.remaining == 10
    assert key.allowed_cidrs == ["10.0.0.0/8"] and key.expires_at == soon
    assert changed.position > made.position

    history = await kl.key_events(org, key_id)
    assert {e.event_type for e in history if isinstance(e, Envelope)} >= {
        "KeyScopesChanged",
        "KeyRateLimitsChanged",
        "KeyCreditsChanged",
        "KeyIpAllowlistChanged",
        "KeyIdentityChanged",
        "KeyExpiryChanged",
    }

    # None clears what may be cleared; the stale version is refused and writes nothing.
    with pytest.raises(KeyledgerAPIError) as stale:
        await kl.update_key(org, key_id, identity_id=None, if_match=made.key.version)
    assert (stale.value.status, stale.value.code) == (412, "version_mismatch")
    cleared = await kl.update_key(org, key_id, identity_id=None, credits=None)
    assert cleared.key.identity_id is None and cleared.key.credits is None

    await kl.revoke_key(org, key_id, "unused")
    with pytest.raises(KeyledgerAPIError) as terminal:
        await kl.update_key(org, key_id, scopes=["c"])
    assert (terminal.value.status, terminal.value.code) == (409, "key_not_mutable")


async def test_revoke_keys_by_ids_and_all(kl: KeyledgerClient) -> None:
    org = new_org()
    keys = [(await kl.generate_key(org, name=f"k{i}", type="secret")).key.id for i in range(3)]

    first = await kl.revoke_keys(org, "compromised", key_ids=keys[:2])
    assert first.revoked == keys[:2] and first.already_terminal == []
    again = await kl.revoke_keys(org, "compromised", key_ids=keys[:1])
    assert again.revoked == [] and again.already_terminal == keys[:1]
    rest = await kl.revoke_keys(org, "leaked", all=True)
    assert rest.revoked == keys[2:] and rest.position > first.position
    assert {(await kl.get_key(org, k)).status for k in keys} == {"revoked"}

    with pytest.raises(KeyledgerAPIError) as none_selected:
        await kl.revoke_keys(org, "other")
    assert (none_selected.value.status, none_selected.value.code) == (422, "validation_error")


async def test_the_sync_client_updates_and_revokes(client: TestClient, admin_key: str) -> None:
    org = new_org()

    def changes() -> tuple[list[str], list[str]]:
        with SyncKeyledgerClient(base_url(client), admin_key, retry=QUICK) as kl:
            made = kl.generate_key(org, name="sync", type="secret")
            changed = kl.update_key(org, made.key.id, scopes=["x"], if_match=made.key.version)
            revoked = kl.revoke_keys(org, "unused", created_by=admin_actor(kl, made.key.id))
            return changed.key.scopes, revoked.revoked

    scopes, revoked = await asyncio.to_thread(changes)
    assert scopes == ["x"] and len(revoked) == 1


def admin_actor(kl: SyncKeyledgerClient, key_id: str) -> str:
    """The actor id that generated ``key_id``, as its first event recorded it."""
    for entry in kl.audit(key_id=key_id, event_type="KeyGenerated"):
        assert isinstance(entry, Envelope)
        return entry.actor.id
    raise AssertionError("no KeyGenerated")


async def test_identities_through_the_client(kl: KeyledgerClient) -> None:
    org = new_org()
    limits = [{"name": "customer", "limit": 2, "window": "1h"}]
    made = await kl.configure_identity(org, "cus/42 é", limits, {"plan": "pro"})
    identity = made.identity
    assert (identity.id, identity.org_id, identity.version) == ("cus/42 é", org, 1)
    assert identity.rate_limits == [NamedRateLimit(name="customer", limit=2, window="1h")]
    assert identity.metadata == {"plan": "pro"} and made.position > 0
    assert await kl.get_identity(org, "cus/42 é") == identity

    keys = [
        await kl.generate_key(org, name=f"k{i}", type="secret", identity_id="cus/42 é")
        for i in range(2)
    ]
    verdicts = [await kl.verify(key=k.secret) for k in (*keys, keys[0])]
    assert [v.code for v in verdicts] == ["VALID", "VALID", "RATE_LIMITED"]
    assert verdicts[0].key is not None and verdicts[0].key.identity_id == "cus/42 é"
    assert [k.id async for k in kl.list_keys(org, identity="cus/42 é")] == [
        k.key.id for k in reversed(keys)
    ]

    with pytest.raises(KeyledgerAPIError) as stale:
        await kl.configure_identity(org, "cus/42 é", [], if_match=5)
    assert (stale.value.status, stale.value.code) == (412, "version_mismatch")
    with pytest.raises(KeyledgerAPIError) as missing:
        await kl.get_identity(org, "nobody")
    assert (missing.value.status, missing.value.code) == (404, "identity_not_found")


async def test_the_sync_client_configures_identities(client: TestClient, admin_key: str) -> None:
    org = new_org()

    def configure() -> tuple[int, int]:
        with SyncKeyledgerClient(base_url(client), admin_key, retry=QUICK) as kl:
            kl.configure_identity(org, "cus_1", [{"name": "a", "limit": 5, "window": "1m"}])
            changed = kl.configure_identity(org, "cus_1", [], if_match=1)
            return changed.identity.version, len(kl.get_identity(org, "cus_1").rate_limits)

    assert await asyncio.to_thread(configure) == (2, 0)
