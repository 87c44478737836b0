"""Usage limits that hold across replicas: three ``keyledger serve`` processes, one key.

Traffic for one key goes through all three replicas at once, and what they
accepted is counted: a rate limit stays within ``limit × 1.1 + 3``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import asyncpg
import pytest

from bench.support import Replicas, migrated_database, running_replicas
from events.models import Actor
from service.service_keys import issue_service_key

REPLICAS = 3


@pytest.fixture
async def three(
    postgres_server_url: str, nats_url: str
) -> AsyncIterator[tuple[Replicas, str, asyncpg.Pool]]:
    """Three replicas on a database of their own, and an admin key they all know."""
    async with (
        migrated_database(postgres_server_url, prefix="keyledger_limits") as (url, pool),
        running_replicas(REPLICAS, url, nats_url) as replicas,
    ):
        admin = await issue_service_key(
            pool, replicas.pepper.encode(), name="admin", scopes=["admin"], actor=Actor(id="t")
        )
        async with aiohttp.ClientSession() as session:
            await replicas.until_accepted(session, admin.secret)
        yield replicas, admin.secret, pool


async def _new_key(
    session: aiohttp.ClientSession, replicas: Replicas, admin: str, **fields: Any
) -> str:
    headers = {"Authorization": f"Bearer {admin}"}
    async with session.post(
        f"{replicas.urls[0]}/v1/orgs/acme/keys",
        json={"name": "shared", "type": "secret", **fields},
        headers=headers,
    ) as response:
        assert response.status == 201, await response.text()
        created = await response.json()
    for url in replicas.urls:  # every replica has the key before the traffic starts
        async with session.post(
            f"{url}/v1/verify",
            json={"key": "sk_live_" + "0" * 49, "min_position": created["position"]},
            headers=headers,
        ) as response:
            assert response.status == 200
    return str(created["secret"])


async def _hammer(
    session: aiohttp.ClientSession,
    replicas: Replicas,
    admin: str,
    secret: str | Sequence[str],
    requests: int,
) -> Counter[str]:
    """``requests`` verifications spread over every replica (and over the secrets, when
    several), many in flight at once."""
    urls = itertools.cycle(replicas.urls)
    secrets = itertools.cycle([secret] if isinstance(secret, str) else secret)
    headers = {"Authorization": f"Bearer {admin}"}
    codes: Counter[str] = Counter()
    semaphore = asyncio.Semaphore(48)

    async def one(url: str) -> None:
        async with (
            semaphore,
            session.post(
                f"{url}/v1/verify", json={"key": next(secrets)}, headers=headers
            ) as response,
        ):
            assert response.status == 200, await response.text()
            codes[(await response.json())["code"]] += 1

    await asyncio.gather(*(one(next(urls)) for _ in range(requests)))
    return codes


async def test_a_rate_limit_holds_across_three_replicas(
    three: tuple[Replicas, str, asyncpg.Pool],
) -> None:
    replicas, admin, _ = three
    limit = 60
    async with aiohttp.ClientSession() as session:
        # An hour's window: the whole burst falls in one window, whatever the machine's speed.
        secret = await _new_key(
            session,
            replicas,
            admin,
            rate_limits=[{"name": "hourly", "limit": limit, "window": "1h"}],
        )
        codes = await _hammer(session, replicas, admin, secret, requests=4 * limit)
    print(f"\n{REPLICAS} replicas, limit {limit}: {dict(codes)}")
    assert set(codes) <= {"VALID", "RATE_LIMITED"}
    assert limit * 0.9 <= codes["VALID"] <= limit * 1.1 + REPLICAS


async def test_an_identity_limit_holds_for_its_keys_together_across_three_replicas(
    three: tuple[Replicas, str, asyncpg.Pool],
) -> None:
    replicas, admin, _ = three
    limit = 60
    headers = {"Authorization": f"Bearer {admin}"}
    async with aiohttp.ClientSession() as session:
        async with session.put(
            f"{replicas.urls[0]}/v1/orgs/acme/identities/customer-1",
            json={"rate_limits": [{"name": "customer", "limit": limit, "window": "1h"}]},
            headers=headers,
        ) as response:
            assert response.status == 201, await response.text()
        # Two keys of the identity, made after it: every replica has heard of both the
        # identity and the keys by the time ``_new_key`` returns.
        secrets = [
            await _new_key(session, replicas, admin, identity_id="customer-1") for _ in range(2)
        ]
        codes = await _hammer(session, replicas, admin, secrets, requests=4 * limit)
    print(f"\n{REPLICAS} replicas, 2 keys, identity limit {limit}: {dict(codes)}")
    assert set(codes) <= {"VALID", "RATE_LIMITED"}
    assert limit * 0.9 <= codes["VALID"] <= limit * 1.1 + REPLICAS


async def test_credits_are_exact_across_three_replicas(
    three: tuple[Replicas, str, asyncpg.Pool],
) -> None:
    replicas, admin, pool = three
    credits = 100
    async with aiohttp.ClientSession() as session:
        secret = await _new_key(session, replicas, admin, credits={"remaining": credits})
        codes = await _hammer(session, replicas, admin, secret, requests=3 * credits)
    print(f"\n{REPLICAS} replicas, {credits} credits: {dict(codes)}")
    assert set(codes) <= {"VALID", "USAGE_EXCEEDED"}
    assert codes["VALID"] <= credits
    assert codes["VALID"] >= credits * 0.9  # blocks held elsewhere are few near 0
    # No event per request: the key's log holds its KeyGenerated alone.
    assert await pool.fetchval("SELECT count(*) FROM events WHERE org_id = 'acme'") == 1
    # What was not answered VALID is still in PostgreSQL or held by a replica: never lost twice.
    assert await pool.fetchval("SELECT remaining FROM key_credits") <= credits - codes["VALID"]
