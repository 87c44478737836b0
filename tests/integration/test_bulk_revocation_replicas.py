"""A bulk revocation through one replica is refused by every replica, for every key.

Three ``keyledger serve`` processes on one PostgreSQL and NATS, each with its
own verification index following the log. The figures printed are for
reading, not asserted (no timed assertions): ``python -m bench.bulk_revocation``
measures them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import pytest

from bench.support import migrated_database, running_replicas
from events.models import Actor
from service.service_keys import issue_service_key

KEYS = 30


@pytest.fixture
async def own_database(postgres_server_url: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    async with migrated_database(postgres_server_url, prefix="keyledger_bulk") as database:
        yield database


async def _codes(http: aiohttp.ClientSession, url: str, secrets: list[str]) -> list[str]:
    codes = []
    for secret in secrets:
        async with http.post(f"{url}/v1/verify", json={"key": secret}) as response:
            assert response.status == 200, await response.text()
            codes.append((await response.json())["code"])
    return codes


async def _until_all_refused(
    http: aiohttp.ClientSession, url: str, secrets: list[str], since: float
) -> float:
    """Seconds from ``since`` until ``url`` refuses every one of ``secrets`` as REVOKED."""
    pending = list(secrets)
    deadline = since + 20.0
    while time.perf_counter() < deadline:
        codes = await _codes(http, url, pending)
        pending = [s for s, code in zip(pending, codes, strict=True) if code != "REVOKED"]
        if not pending:
            return time.perf_counter() - since
    raise AssertionError(f"{url} still accepts {len(pending)} revoked keys after 20 s")


async def test_every_replica_refuses_every_key_of_a_bulk_revocation(
    own_database: tuple[str, asyncpg.Pool], nats_url: str
) -> None:
    url, pool = own_database
    async with running_replicas(3, url, nats_url, max_active_keys_per_org="1000") as replicas:
        admin = await issue_service_key(
            pool, replicas.pepper.encode(), name="admin", scopes=["admin"], actor=Actor(id="t")
        )
        async with aiohttp.ClientSession(
            headers={"Authorization": f"Bearer {admin.secret}"}
        ) as http:
            await replicas.until_accepted(http, admin.secret)
            first, second, _ = replicas.urls
            made: list[dict[str, Any]] = []
            for number in range(KEYS):
                async with http.post(
                    f"{first}/v1/orgs/acme/keys", json={"name": f"k{number}", "type": "secret"}
                ) as response:
                    assert response.status == 201, await response.text()
                    made.append(await response.json())
            secrets = [m["secret"] for m in made]
            last = made[-1]["position"]
            for replica in replicas.urls:
                body = {"key": secrets[-1], "min_position": last}
                async with http.post(f"{replica}/v1/verify", json=body) as response:
                    assert (await response.json())["code"] == "VALID"
                assert set(await _codes(http, replica, secrets)) == {"VALID"}

            started = time.perf_counter()
            async with http.post(
                f"{second}/v1/orgs/acme/revocations", json={"reason": "leaked", "all": True}
            ) as response:
                assert response.status == 200, await response.text()
                answer = await response.json()
            answered = time.perf_counter() - started
            assert sorted(answer["revoked"]) == sorted(m["key"]["id"] for m in made)
            # The replica that took it refuses every key by the time it answers.
            assert set(await _codes(http, second, secrets)) == {"REVOKED"}
            delays = await asyncio.gather(
                *(_until_all_refused(http, replica, secrets, started) for replica in replicas.urls)
            )
    print(
        f"\nbulk revocation of {KEYS} keys answered after {answered * 1000:.1f} ms; every key"
        " refused by the replicas after " + ", ".join(f"{d * 1000:.1f} ms" for d in delays)
    )
