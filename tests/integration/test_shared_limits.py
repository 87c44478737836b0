"""Usage limits that hold across replicas: three ``keyledger serve`` processes, one key.

Traffic for one key goes through all three replicas at once, and what they
accepted is counted: a rate limit stays within ``limit × 1.1 + 3``. One
replica sharing alone enforces a limit exactly, and a refusal never shows room.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import asyncpg
import nats
import pytest

from bench.support import Replicas, migrated_database, running_replicas
from events.models import Actor
from events.servers import nats_servers
from service.http.context import KEYLEDGER
from service.service_keys import issue_service_key
from service.settings import Settings
from service.verification.shared_limits import encode
from tests.support.api import Api, new_org
from tests.support.outbox import eventually
from tests.support.poison import isolated_app_with_relay

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


async def _until_full(
    session: aiohttp.ClientSession, replicas: Replicas, admin: str, secret: str | Sequence[str]
) -> int:
    """Unhurried verifications, round the replicas, until one says the limit is full.

    A burst can be refused below the limit (each replica runs ahead of what the others
    heard by a share only, and refuses with ``retry_after`` 1 past it); once the counts
    have been heard, the rest of the limit must still be there. Returns how many of
    these were VALID. A refusal for the limit itself (``retry_after`` past 1) ends it: a
    replica's count never exceeds the true total, so the limit is then truly reached.
    """
    urls = itertools.cycle(replicas.urls)
    secrets = itertools.cycle([secret] if isinstance(secret, str) else secret)
    headers = {"Authorization": f"Bearer {admin}"}
    valid = 0
    for _ in range(400):
        async with session.post(
            f"{next(urls)}/v1/verify", json={"key": next(secrets)}, headers=headers
        ) as response:
            assert response.status == 200, await response.text()
            answer = await response.json()
        if answer["code"] == "VALID":
            valid += 1
        elif answer["retry_after"] > 1:
            return valid
        else:
            await asyncio.sleep(0.05)  # refused for the share: let the counts be heard
    raise AssertionError("the limit never said it was full")


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
        later = await _until_full(session, replicas, admin, secret)
    print(f"\n{REPLICAS} replicas, limit {limit}: {dict(codes)}, then {later} VALID")
    assert set(codes) <= {"VALID", "RATE_LIMITED"}
    # Never over the limit by more than its tolerance; never short of it once heard.
    assert limit <= codes["VALID"] + later <= limit * 1.1 + REPLICAS


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
        later = await _until_full(session, replicas, admin, secrets)
    print(f"\n{REPLICAS} replicas, 2 keys, identity limit {limit}: {dict(codes)}, then {later}")
    assert set(codes) <= {"VALID", "RATE_LIMITED"}
    assert limit <= codes["VALID"] + later <= limit * 1.1 + REPLICAS


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


# -- one replica with sharing on (issue 14) -------------------------------------------


@pytest.fixture
async def sharing_alone(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> AsyncIterator[tuple[Api, Settings]]:
    """One app sharing its counts over NATS, on a subject no other test (or replica) uses."""
    async with isolated_app_with_relay(postgres_server_url, settings, nats_url) as (app, _, stream):
        limiter = app.client.app[KEYLEDGER].limiter

        async def sharing() -> bool:
            return limiter.sharing

        await eventually(sharing, what="the replica sharing its counts")
        yield Api(app.client, app.admin_key), stream


async def test_one_replica_sharing_over_nats_enforces_a_limit_exactly(
    sharing_alone: tuple[Api, Settings],
) -> None:
    """Twelve verifications in a row, each after the last answer: ten VALID, then refused."""
    api, _ = sharing_alone
    limits = [{"name": "m", "limit": 10, "window": "1h"}]
    secret = (await api.generate(new_org(), rate_limits=limits))["secret"]
    answers = []
    for _ in range(12):
        status, _, answer = await api.post("/v1/verify", {"key": secret})
        assert status == 200, answer
        answers.append(answer)
    assert [a["code"] for a in answers] == ["VALID"] * 10 + ["RATE_LIMITED"] * 2
    assert [a["ratelimits"][0]["remaining"] for a in answers] == [*range(9, -1, -1), 0, 0]
    assert all(a["retry_after"] > 1 for a in answers[10:])  # the hour's end, not "soon"


async def test_authorize_headers_agree_with_the_status(
    sharing_alone: tuple[Api, Settings],
) -> None:
    api, _ = sharing_alone
    limits = [{"name": "m", "limit": 3, "window": "1h"}]
    secret = (await api.generate(new_org(), rate_limits=limits))["secret"]
    headers = {"X-Keyledger-Service-Key": api.service_key, "Authorization": f"Bearer {secret}"}
    seen = []
    for _ in range(5):
        response = await api.client.get("/v1/authorize", headers=headers)
        seen.append((response.status, response.headers["RateLimit-Remaining"]))
        if response.status == 429:
            assert int(response.headers["Retry-After"]) > 1
    assert seen == [(200, "2"), (200, "1"), (200, "0"), (429, "0"), (429, "0")]


async def test_a_refusal_for_another_replicas_share_claims_no_room(
    sharing_alone: tuple[Api, Settings], nats_url: str
) -> None:
    """With another replica heard, near the limit this one may refuse early: it then says 0."""
    api, stream = sharing_alone
    limiter = api.client.app[KEYLEDGER].limiter
    limits = [{"name": "m", "limit": 3, "window": "1h"}]
    secret = (await api.generate(new_org(), rate_limits=limits))["secret"]
    async with contextlib.AsyncExitStack() as stack:
        peer = await nats.connect(servers=nats_servers(nats_url))
        stack.push_async_callback(peer.close)
        await peer.publish(stream.limits_subject, encode("another-replica", []))

        async def two_replicas() -> bool:
            return limiter.replicas() == 2

        await eventually(two_replicas, what="the other replica heard")
        answers = []
        for _ in range(4):
            status, _, answer = await api.post("/v1/verify", {"key": secret})
            assert status == 200, answer
            answers.append(answer)
    # However soon its own counts come back, never more than the limit from one replica, …
    assert [a["code"] for a in answers].count("VALID") <= 3
    assert answers[0]["code"] == "VALID"
    for answer in answers:
        # … and a refusal (for the share, retry_after 1, or for the limit) shows no room.
        if answer["code"] == "RATE_LIMITED":
            assert answer["ratelimits"][0]["remaining"] == 0
