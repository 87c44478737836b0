"""Credits over HTTP and the sweeper's refills, against PostgreSQL (docs/api.md#credits)."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from events.models import Actor, CreditRefill, Credits
from service.clock import utc_now
from service.domain import key_material
from service.domain.commands import GenerateKey
from service.domain.ids import new_key_id
from service.http.context import KEYLEDGER
from service.settings import Settings
from tests.support.api import Api, indexed, new_org


async def verify(api: Api, **body: Any) -> dict[str, Any]:
    status, _, payload = await api.post("/v1/verify", body)
    assert status == 200, payload
    return payload


async def test_credits_are_spent_without_events_and_run_out(api: Api, pool: asyncpg.Pool) -> None:
    org = new_org()
    created = await api.generate(org, credits={"remaining": 5})
    secret, key_id = created["secret"], created["key"]["id"]
    assert created["key"]["credits"] == {"remaining": 5, "refill": None}
    first = await verify(api, key=secret, cost=2)
    assert (first["code"], first["credits_remaining"]) == ("VALID", 3)
    refused = await verify(api, key=secret, cost=4)  # too few: nothing spent
    assert (refused["code"], refused["http_status"], refused["valid"]) == (
        "USAGE_EXCEEDED",
        429,
        False,
    )
    assert (await verify(api, key=secret, cost=3))["credits_remaining"] == 0
    assert (await verify(api, key=secret))["code"] == "USAGE_EXCEEDED"
    assert (await verify(api, key=secret, cost=0))["code"] == "VALID"  # a look costs nothing
    events = await pool.fetchval("SELECT count(*) FROM events WHERE key_id = $1", key_id)
    assert events == 1  # no event per request
    # A PATCH sets a new balance at once; clearing credits makes the key unlimited.
    status, _, _ = await api.patch(f"/v1/orgs/{org}/keys/{key_id}", {"credits": {"remaining": 1}})
    assert status == 200
    assert (await verify(api, key=secret))["code"] == "VALID"
    assert (await verify(api, key=secret))["code"] == "USAGE_EXCEEDED"
    status, _, _ = await api.patch(f"/v1/orgs/{org}/keys/{key_id}", {"credits": None})
    assert status == 200
    answer = await verify(api, key=secret)
    assert answer["code"] == "VALID" and "credits_remaining" not in answer


async def test_concurrent_requests_never_spend_more_than_the_credits(api: Api) -> None:
    secret = (await api.generate(new_org(), credits={"remaining": 25}))["secret"]
    answers = await asyncio.gather(*(verify(api, key=secret) for _ in range(60)))
    assert sum(a["code"] == "VALID" for a in answers) == 25


async def test_refills_are_written_once_per_period(
    api: Api, client: TestClient, pool: asyncpg.Pool, settings: Settings
) -> None:
    org = new_org()
    service = client.app[KEYLEDGER]
    secret = key_material.new_secret("secret", "live")
    two_days_ago = utc_now() - timedelta(days=2)
    refill = CreditRefill(amount=10, interval="daily")
    # A key whose credits were set two days ago (written behind the app's back).
    outcome = await service.commands.handle(
        GenerateKey(
            key_id=new_key_id(),
            org_id=org,
            name="metered",
            type="secret",
            environment="live",
            issued_at=two_days_ago,
            secret_hash=key_material.secret_hash(settings.pepper_bytes, secret),
            credits=Credits(remaining=1, refill=refill),
        ),
        org_id=org,
        actor=Actor(id="test"),
    )
    key_id = outcome.key["id"]
    await indexed(client, outcome.position)
    assert (await verify(api, key=secret))["code"] == "VALID"
    assert (await verify(api, key=secret))["code"] == "USAGE_EXCEEDED"
    # Every replica sweeps: three sweeps at once write one refill for today's period.
    await asyncio.gather(*(service.sweeper.refill_once() for _ in range(3)))
    await service.sweeper.refill_once()
    rows = await pool.fetch(
        "SELECT data FROM events WHERE key_id = $1 AND event_type = 'KeyCreditsRefilled'", key_id
    )
    assert [json.loads(r["data"]) for r in rows] == [
        {"remaining": 10, "period": utc_now().date().isoformat()}
    ]
    answer = await verify(api, key=secret, cost=4)
    assert (answer["code"], answer["credits_remaining"]) == ("VALID", 6)
    next_refill = await pool.fetchval(
        "SELECT next_refill_at FROM key_credits WHERE key_id = $1", key_id
    )
    assert next_refill > utc_now() and next_refill - utc_now() <= timedelta(days=1)
    # A revoked key is refilled no more.
    await api.post(f"/v1/orgs/{org}/keys/{key_id}/revoke", {"reason": "unused"})
    await pool.execute(
        "UPDATE key_credits SET next_refill_at = $2 WHERE key_id = $1", key_id, two_days_ago
    )
    assert key_id not in {k for k, _ in await service.commands.due_for_refill()}
