"""Authority never grows (docs/security.md §4): ``_system`` needs an unlimited admin key, and a
command re-checks its caller inside its own transaction, on every replica."""

from __future__ import annotations

import asyncio
import secrets
from datetime import timedelta
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from events.models import Actor
from service.clock import utc_now
from service.domain.commands import GenerateKey, RevokeKey, RotateKey
from service.domain.ids import new_key_id
from service.domain.orgs import SYSTEM_ORG
from service.errors import KeyledgerError
from service.http.context import KEYLEDGER
from service.key_commands import KeyCommandHandler
from service.service_keys import issue_service_key
from service.settings import Settings
from service.verification.callers import Caller
from tests.support.api import Api, indexed, new_org
from tests.support.event_log import append_lock_held, writers_waiting_for_lock
from tests.support.replicas import in_process_replica

ACTOR = Actor(id="test:authority")


async def service_key(
    pool: asyncpg.Pool,
    settings: Settings,
    scopes: list[str],
    orgs: list[str] | None = None,
    *,
    known_to: tuple[TestClient, ...] = (),
) -> tuple[str, str]:
    """(secret, key id) of a new service key, once the apps ``known_to`` have indexed it."""
    issued = await issue_service_key(
        pool, settings.pepper_bytes, name="svc", scopes=scopes, orgs=orgs, actor=ACTOR
    )
    for app_client in known_to:
        await indexed(app_client, issued.position)
    return issued.secret, issued.key_id


async def version_of(pool: asyncpg.Pool, key_id: str) -> int:
    return await pool.fetchval("SELECT version FROM key_registry WHERE key_id = $1", key_id)


async def test_an_org_limited_admin_cannot_touch_system(
    api: Api, client: TestClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    mine = new_org()
    limited_secret, limited_id = await service_key(
        pool, settings, ["admin"], orgs=[mine], known_to=(client,)
    )
    limited = Api(client, limited_secret)
    target_secret, target_id = await service_key(pool, settings, ["admin"], known_to=(client,))
    before = await version_of(pool, target_id)

    # Minting an unlimited admin key, the example of the issue.
    for body in (
        {"name": "escalate", "type": "secret", "scopes": ["admin"]},
        {"name": "escalate", "type": "secret", "scopes": ["keys:write"], "metadata": {}},
        {"name": "escalate", "type": "secret", "scopes": ["admin"], "metadata": {"orgs": [mine]}},
    ):
        status, _, payload = await limited.post("/v1/orgs/_system/keys", body)
        assert (status, payload["error"]["code"]) == (404, "org_not_found"), body
    # Every command on another admin key, and on its own.
    commands: list[tuple[str, Any]] = [
        ("rename", {"name": "mine now"}),
        ("disable", {"reason": "x"}),
        ("enable", None),
        ("rotate", {"grace_period": "0s"}),
        ("revoke", {"reason": "other"}),
    ]
    for key_id in (target_id, limited_id):
        for command, body in commands:
            path = f"/v1/orgs/_system/keys/{key_id}/{command}"
            status, _, payload = await limited.post(path, body)
            assert (status, payload["error"]["code"]) == (404, "org_not_found"), path
    # Every read of service keys.
    for path in (
        "/v1/orgs/_system/keys",
        f"/v1/orgs/_system/keys/{target_id}",
        f"/v1/orgs/_system/keys/{target_id}/events",
        "/v1/audit?org_id=_system",
    ):
        status, _, payload = await limited.get(path)
        assert (status, payload["error"]["code"]) == (404, "org_not_found"), path
    assert await version_of(pool, target_id) == before
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM key_registry WHERE org_id = '_system' AND key_id IN"
            " (SELECT key_id FROM events WHERE actor ->> 'id' = $1)",
            limited_id,
        )
        == 0
    )

    # Unfiltered audit, or filtered by a service key: its own orgs only.
    await limited.generate(mine)
    for query in ("", f"?key_id={target_id}", f"?actor={limited_id}", "?event_type=KeyGenerated"):
        status, _, payload = await limited.get(f"/v1/audit{query}")
        assert status == 200, query
        assert {event["org_id"] for event in payload["data"]} <= {mine}, query
    # Verifying a service key's secret tells it nothing about the key.
    status, _, payload = await limited.post("/v1/verify", {"key": target_secret})
    assert status == 200 and payload["code"] == "NOT_FOUND" and payload["key"] is None

    # Within its orgs it is an admin, and the unlimited admin still manages service keys.
    status, _, _ = await limited.get(f"/v1/orgs/{mine}/keys")
    assert status == 200
    status, _, _ = await api.post(f"/v1/orgs/_system/keys/{target_id}/disable", {})
    assert status == 200


async def test_only_an_unlimited_admin_reads_system(
    client: TestClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    org = new_org()
    for scopes, orgs in (
        (["keys:read", "keys:write", "audit:read", "keys:verify"], None),
        (["admin"], []),
        (["admin"], [org]),
    ):
        caller = Api(
            client, (await service_key(pool, settings, scopes, orgs, known_to=(client,)))[0]
        )
        status, _, payload = await caller.get("/v1/orgs/_system/keys")
        assert (status, payload["error"]["code"]) == (404, "org_not_found"), (scopes, orgs)
        status, _, payload = await caller.get("/v1/audit?limit=1000")
        if status == 200:
            assert all(e["org_id"] != SYSTEM_ORG for e in payload["data"]), (scopes, orgs)
    unlimited = Api(client, (await service_key(pool, settings, ["admin"], known_to=(client,)))[0])
    status, _, _ = await unlimited.get("/v1/orgs/_system/keys")
    assert status == 200


# -- the caller, re-checked inside the command's transaction ------------------


async def test_a_stale_replica_commits_nothing_for_an_ended_service_key(
    api: Api, pool: asyncpg.Pool, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with in_process_replica(settings) as replica:
        index = replica.app[KEYLEDGER].index
        for ending, body in (("revoke", {"reason": "leaked"}), ("disable", {"reason": "x"})):
            secret, key_id = await service_key(
                pool, settings, ["keys:write"], known_to=(api.client, replica)
            )
            through_b = Api(replica, secret)
            org = new_org()
            await through_b.generate(org)  # replica B knows the caller, and remembers it
            # From now on B's index hears of events but applies none of them: its view of
            # the service key is stale, as on a replica whose feed lags.
            monkeypatch.setattr(index, "apply_event", lambda event: None)
            status, _, _ = await api.post(f"/v1/orgs/_system/keys/{key_id}/{ending}", body)
            assert status == 200  # committed through replica A
            status, _, payload = await through_b.post(
                f"/v1/orgs/{org}/keys", {"name": "after the end", "type": "secret"}
            )
            assert (status, payload["error"]["code"]) == (401, "api_key_inactive"), ending
            assert (
                await pool.fetchval("SELECT count(*) FROM events WHERE org_id = $1", org) == 1
            )  # the first key only
            monkeypatch.undo()


def _service_key_command(secret_hash: str, **fields: Any) -> GenerateKey:
    return GenerateKey(
        key_id=new_key_id(),
        org_id=SYSTEM_ORG,
        name="svc",
        type="secret",
        environment="live",
        issued_at=fields.pop("issued_at", utc_now()),
        scopes=("keys:write",),
        secret_hash=secret_hash,
        hint="sk_live_0000…0000",
        **fields,
    )


def _customer_key(org: str) -> GenerateKey:
    return GenerateKey(
        key_id=new_key_id(),
        org_id=org,
        name="customer",
        type="secret",
        environment="live",
        issued_at=utc_now(),
        secret_hash=secrets.token_hex(32),
    )


async def _refused(handler: KeyCommandHandler, caller: Caller) -> str:
    org = new_org()
    with pytest.raises(KeyledgerError) as refused:
        await handler.handle(_customer_key(org), org_id=org, actor=ACTOR, caller=caller)
    assert await handler.pool.fetchval("SELECT count(*) FROM events WHERE org_id = $1", org) == 0
    return refused.value.code


async def test_expired_and_rotated_out_callers_are_refused_in_the_transaction(
    pool: asyncpg.Pool,
) -> None:
    handler = KeyCommandHandler(pool, max_active_keys=1000)
    writes = frozenset({"keys:write"})

    # Past expires_at, KeyExpired not yet written: still refused.
    old_hash = secrets.token_hex(32)
    past = utc_now() - timedelta(seconds=1)
    expired = _service_key_command(old_hash, issued_at=past - timedelta(minutes=1), expires_at=past)
    await handler.handle(expired, org_id=SYSTEM_ORG, actor=ACTOR)
    assert await _refused(handler, Caller(expired.key_id, writes, None, old_hash)) == (
        "api_key_inactive"
    )

    # Rotated: the old secret works within its grace period and not after it.
    for grace, old_still_works in ((timedelta(hours=1), True), (timedelta(0), False)):
        first, second = secrets.token_hex(32), secrets.token_hex(32)
        key = _service_key_command(first)
        await handler.handle(key, org_id=SYSTEM_ORG, actor=ACTOR)
        rotate = RotateKey(
            key_id=key.key_id, issued_at=utc_now(), grace_period=grace, secret_hash=second
        )
        await handler.handle(rotate, org_id=SYSTEM_ORG, actor=ACTOR)
        org = new_org()
        outcome = await handler.handle(
            _customer_key(org),
            org_id=org,
            actor=ACTOR,
            caller=Caller(key.key_id, writes, None, second),
        )
        assert len(outcome.events) == 1
        old = Caller(key.key_id, writes, None, first)
        if old_still_works:
            await handler.handle(_customer_key(org), org_id=org, actor=ACTOR, caller=old)
        else:
            assert await _refused(handler, old) == "api_key_inactive"

    # Not a service key at all (a customer key's id).
    customer = _customer_key(new_org())
    await handler.handle(customer, org_id=customer.org_id, actor=ACTOR)
    stranger = Caller(customer.key_id, writes, None, customer.secret_hash)
    assert await _refused(handler, stranger) == "api_key_inactive"


async def test_a_revocation_earlier_in_the_same_batch_is_seen(pool: asyncpg.Pool) -> None:
    handler = KeyCommandHandler(pool, max_active_keys=1000)
    secret_hash = secrets.token_hex(32)
    key = _service_key_command(secret_hash)
    await handler.handle(key, org_id=SYSTEM_ORG, actor=ACTOR)
    caller = Caller(key.key_id, frozenset({"keys:write"}), None, secret_hash)
    org = new_org()
    async with append_lock_held(pool):
        before = asyncio.create_task(
            handler.handle(_customer_key(org), org_id=org, actor=ACTOR, caller=caller)
        )
        await writers_waiting_for_lock(pool)  # the writer holds the first command
        revoke = RevokeKey(key_id=key.key_id, reason="leaked", issued_at=utc_now())
        # The next batch: the revocation, then a command made with the revoked key.
        results = [
            asyncio.create_task(handler.handle(revoke, org_id=SYSTEM_ORG, actor=ACTOR)),
            asyncio.create_task(
                handler.handle(_customer_key(org), org_id=org, actor=ACTOR, caller=caller)
            ),
        ]
        await asyncio.sleep(0)
    assert len((await before).events) == 1
    assert len((await results[0]).events) == 1
    with pytest.raises(KeyledgerError) as refused:
        await results[1]
    assert refused.value.code == "api_key_inactive"
    assert await pool.fetchval("SELECT count(*) FROM events WHERE org_id = $1", org) == 1


async def test_a_held_append_lock_answers_503_with_retry_after(
    api: Api, pool: asyncpg.Pool, settings: Settings, admin_key: str
) -> None:
    org = new_org()
    async with in_process_replica(settings, append_lock_timeout_seconds=0.2) as replica:
        through_b = Api(replica, admin_key)
        async with append_lock_held(pool):
            status, headers, payload = await through_b.post(
                f"/v1/orgs/{org}/keys", {"name": "waits", "type": "secret"}
            )
            assert (status, payload["error"]["code"]) == (503, "unavailable")
            assert headers["Retry-After"] == "1"
            assert "sk_" not in str(payload)
        assert await pool.fetchval("SELECT count(*) FROM events WHERE org_id = $1", org) == 0
        created = await through_b.generate(org, name="waits")
        assert created["key"]["org_id"] == org
