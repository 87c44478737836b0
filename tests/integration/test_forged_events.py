"""Events ``decide`` could never have made, written behind the API: the key fails closed.

A superuser can append a chained row by hand. A ``KeyEnabled`` after
``KeyRevoked`` must not bring the revoked key back, and an event naming
another org must not move a key between tenants: every consumer folds with
``evolve``, which refuses both, so the key is quarantined and verify answers
``NOT_FOUND`` instead of ``VALID``.
"""

from __future__ import annotations

from typing import Any

import pytest

from service.domain.ids import new_key_id
from service.http.context import KEYLEDGER
from tests.support.api import new_org
from tests.support.outbox import eventually
from tests.support.poison import IsolatedApp, inject, isolated_app

NOW = "2030-01-01T00:00:00.000000Z"


async def _verify(app: IsolatedApp, secret: str) -> str:
    response = await app.client.post("/v1/verify", json={"key": secret}, headers=app.headers())
    return (await response.json())["code"]


async def _generate(app: IsolatedApp, org: str) -> dict[str, Any]:
    response = await app.client.post(
        f"/v1/orgs/{org}/keys", json={"name": "k", "type": "secret"}, headers=app.headers()
    )
    assert response.status == 201
    return await response.json()


async def _command(app: IsolatedApp, org: str, key_id: str, action: str, body: Any) -> int:
    response = await app.client.post(
        f"/v1/orgs/{org}/keys/{key_id}/{action}", json=body, headers=app.headers()
    )
    return response.status


@pytest.mark.parametrize(
    ("prepare", "forged", "data"),
    [
        # A revoked key brought back.
        (("revoke", {"reason": "leaked"}), "KeyEnabled", {}),
        # A revoked key disabled, renamed, rotated, expired.
        (("revoke", {"reason": "leaked"}), "KeyRenamed", {"name": "x", "previous_name": "k"}),
        (("revoke", {"reason": "leaked"}), "KeyExpired", {}),
        # An active key "enabled" (it was never disabled) and a disabled key disabled again.
        (None, "KeyEnabled", {}),
        (("disable", {"reason": "x"}), "KeyDisabled", {"reason": "again"}),
    ],
)
async def test_an_impossible_transition_quarantines_the_key(
    postgres_server_url: str,
    settings: Any,
    prepare: tuple[str, dict[str, Any]] | None,
    forged: str,
    data: dict[str, Any],
) -> None:
    async with isolated_app(postgres_server_url, settings) as app:
        org = new_org()
        bystander = await _generate(app, org)
        created = await _generate(app, org)
        key_id = created["key"]["id"]
        expected_before = "VALID"
        if prepare is not None:
            action, body = prepare
            assert await _command(app, org, key_id, action, body) == 200
            expected_before = "REVOKED" if action == "revoke" else "DISABLED"
        assert await _verify(app, created["secret"]) == expected_before
        version = 2 if prepare is not None else 1
        async with app.pool.acquire() as conn:
            injected = await inject(
                conn,
                org,
                event_type=forged,
                data=data,
                key_id=key_id,
                stream_version=version + 1,
                occurred_at=NOW,
            )
        index = app.client.app[KEYLEDGER].index

        async def applied() -> bool:
            return index.position >= injected.position

        await eventually(applied, what="the index to pass the forged event")
        # Never VALID: the key is set aside, verify fails closed.
        assert await _verify(app, created["secret"]) == "NOT_FOUND"
        assert await _command(app, org, key_id, "rename", {"name": "y"}) == 409
        # Every other key goes on.
        assert await _verify(app, bystander["secret"]) == "VALID"
        assert await _command(app, org, bystander["key"]["id"], "rename", {"name": "z"}) == 200
        readyz = await (await app.client.get("/readyz")).json()
        assert readyz["status"] == "degraded"
        assert any(q["key_id"] == key_id for q in readyz.get("quarantined", []))


async def test_an_event_naming_another_org_quarantines_the_key(
    postgres_server_url: str, settings: Any
) -> None:
    async with isolated_app(postgres_server_url, settings) as app:
        org = new_org()
        created = await _generate(app, org)
        key_id = created["key"]["id"]
        async with app.pool.acquire() as conn:
            injected = await inject(
                conn,
                f"{org}x",
                event_type="KeyDisabled",
                data={"reason": "moved"},
                key_id=key_id,
                stream_version=2,
                occurred_at=NOW,
            )
        index = app.client.app[KEYLEDGER].index

        async def applied() -> bool:
            return index.position >= injected.position

        await eventually(applied, what="the index to pass the forged event")
        assert await _verify(app, created["secret"]) == "NOT_FOUND"


async def test_a_hole_in_the_log_makes_verification_fail_closed(
    postgres_server_url: str, settings: Any
) -> None:
    """A row written two positions past the head leaves a hole no append can leave.

    Nothing behind the hole reaches the index, so a revocation made after it
    would go unseen: verify and authorize refuse (503 ``log_gap``) rather than
    answer ``VALID`` for a revoked key.
    """
    async with isolated_app(postgres_server_url, settings) as app:
        org = new_org()
        created = await _generate(app, org)
        async with app.pool.acquire() as conn:
            head = await conn.fetchval("SELECT max(position) FROM events")
            # A copy of the head's KeyGenerated for another key, two positions on.
            await conn.execute(
                """INSERT INTO events (position, event_id, event_type, schema_version, org_id,
                       key_id, stream_version, occurred_at, actor, data, hash)
                   SELECT $1, gen_random_uuid(), event_type, schema_version, org_id, $3,
                          stream_version, occurred_at, actor, data, repeat('f', 64)
                   FROM events WHERE position = $2""",
                head + 2,
                head,
                new_key_id(),
            )
            await conn.execute("SELECT pg_notify('keyledger_events', $1)", str(head + 2))
        assert await _command(app, org, created["key"]["id"], "revoke", {"reason": "leaked"}) == 200

        async def refused() -> bool:
            response = await app.client.post(
                "/v1/verify", json={"key": created["secret"]}, headers=app.headers()
            )
            body = await response.json()
            return response.status == 503 and body["error"]["code"] == "log_gap"

        await eventually(refused, what="verify to refuse behind the hole")
        response = await app.client.get(
            "/v1/authorize",
            headers={
                "X-Keyledger-Service-Key": app.admin_key,
                "Authorization": f"Bearer {created['secret']}",
            },
        )
        assert response.status == 503
