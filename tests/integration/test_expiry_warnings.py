"""``KeyExpiringSoon`` on real PostgreSQL: once per key and lead, however many replicas sweep."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from service.clock import utc_now
from service.http.context import KEYLEDGER
from service.settings import Settings
from tests.support.api import new_org
from tests.support.poison import isolated_app
from tests.support.replicas import in_process_replica


async def test_two_replicas_write_each_warning_once(
    postgres_server_url: str, settings: Settings
) -> None:
    org = new_org()
    # A key living 30 s: the 29s warning comes due after a second; the 1h one never (the
    # key did not exist an hour before its expiry).
    leads = settings.replace(expiry_warnings="1h,29s")
    async with isolated_app(postgres_server_url, leads) as app:
        async with in_process_replica(leads, database_url=app.database_url) as other:
            expires = utc_now() + timedelta(seconds=30)
            expires_at = expires.isoformat()
            response = await app.client.post(
                f"/v1/orgs/{org}/keys",
                json={"name": "soon", "type": "secret", "expires_at": expires_at},
                headers=app.headers(),
            )
            assert response.status == 201
            key_id = (await response.json())["key"]["id"]
            await until(expires - timedelta(seconds=29))  # the warning is due
            sweepers = [app.client.app[KEYLEDGER].sweeper, other.app[KEYLEDGER].sweeper]
            for _ in range(3):
                await asyncio.gather(*(sweeper.warn_once() for sweeper in sweepers))

        rows = await app.pool.fetch(
            "SELECT data ->> 'lead' AS lead, actor ->> 'id' AS actor, position FROM events"
            " WHERE key_id = $1 AND event_type = 'KeyExpiringSoon'",
            key_id,
        )
        assert [(r["lead"], r["actor"]) for r in rows] == [("29s", "keyledger:expiry-sweeper")]
        after = f"?min_position={rows[0]['position']}"
        response = await app.client.get(
            f"/v1/orgs/{org}/keys/{key_id}/events{after}", headers=app.headers()
        )
        history = await response.json()
        # (KeyExpired may follow, on a machine slow enough for the 30 s to pass.)
        assert [e["event_type"] for e in history["data"]][:2] == ["KeyGenerated", "KeyExpiringSoon"]
        assert history["data"][1]["data"]["expires_at"] == history["data"][0]["data"]["expires_at"]
        response = await app.client.get(
            f"/v1/orgs/{org}/keys/{key_id}{after}", headers=app.headers()
        )
        key = await response.json()
        assert key["version"] >= 2


async def until(moment: datetime) -> None:
    """Return once the clock reads ``moment``."""
    await asyncio.sleep(max(0.0, (moment - utc_now()).total_seconds()))
