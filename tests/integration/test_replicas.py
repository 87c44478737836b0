"""Several replicas on one PostgreSQL and NATS: revocation everywhere, expiry once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import asyncpg
import nats
import pytest
from nats.js.errors import NotFoundError

from bench.support import running_replicas, scratch_database
from events.models import Actor
from events.servers import nats_servers
from service.clock import utc_now
from service.domain import key_material
from service.domain.commands import GenerateKey
from service.domain.ids import new_key_id
from service.expiry import ExpirySweeper
from service.key_commands import KeyCommandHandler
from service.service_keys import issue_service_key
from service.store.migrate import migrate


@pytest.fixture
async def own_database(postgres_server_url: str) -> AsyncIterator[str]:
    async with scratch_database(postgres_server_url, prefix="keyledger_replicas") as url:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()
        yield url


async def _verify_code(session: aiohttp.ClientSession, url: str, admin: str, secret: str) -> str:
    async with session.post(
        f"{url}/v1/verify", json={"key": secret}, headers={"Authorization": f"Bearer {admin}"}
    ) as response:
        assert response.status == 200, await response.text()
        return (await response.json())["code"]


async def _until_revoked(
    session: aiohttp.ClientSession, url: str, admin: str, secret: str, since: float
) -> float:
    deadline = since + 10.0
    while time.perf_counter() < deadline:
        if await _verify_code(session, url, admin, secret) == "REVOKED":
            return time.perf_counter() - since
    raise AssertionError(f"{url} still accepts the revoked key after 10 s")


async def test_a_revocation_reaches_every_replica(own_database: str, nats_url: str) -> None:
    async with running_replicas(3, own_database, nats_url) as replicas:
        pool = await asyncpg.create_pool(own_database, min_size=1, max_size=2)
        try:
            admin = await issue_service_key(
                pool, replicas.pepper.encode(), name="admin", scopes=["admin"], actor=Actor(id="t")
            )
        finally:
            await pool.close()
        headers = {"Authorization": f"Bearer {admin.secret}"}
        async with aiohttp.ClientSession() as session:
            await replicas.until_accepted(session, admin.secret)
            first = replicas.urls[0]
            async with session.post(
                f"{first}/v1/orgs/acme/keys", json={"name": "k", "type": "secret"}, headers=headers
            ) as response:
                assert response.status == 201, await response.text()
                created = await response.json()
            secret = created["secret"]
            for url in replicas.urls:
                async with session.post(
                    f"{url}/v1/verify",
                    json={"key": secret, "min_position": created["position"]},
                    headers=headers,
                ) as response:
                    assert (await response.json())["code"] == "VALID"

            started = time.perf_counter()
            async with session.post(
                f"{first}/v1/orgs/acme/keys/{created['key']['id']}/revoke",
                json={"reason": "compromised"},
                headers=headers,
            ) as response:
                assert response.status == 200
            acknowledged = time.perf_counter() - started
            delays = await asyncio.gather(
                *(
                    _until_revoked(session, url, admin.secret, secret, started)
                    for url in replicas.urls
                )
            )
        print(
            f"\nrevoke acknowledged after {acknowledged * 1000:.1f} ms; "
            "refused by the replicas after " + ", ".join(f"{d * 1000:.1f} ms" for d in delays)
        )
    # Their stream goes with them: NATS would keep its every message on disk.
    assert replicas.stream is not None
    client = await nats.connect(servers=nats_servers(nats_url))
    try:
        with pytest.raises(NotFoundError):
            await client.jetstream().stream_info(replicas.stream)
    finally:
        await client.close()


async def test_racing_sweepers_write_one_key_expired_per_key(own_database: str) -> None:
    pools = [await asyncpg.create_pool(own_database, min_size=1, max_size=3) for _ in range(3)]
    try:
        handlers = [KeyCommandHandler(pool, max_active_keys=1000) for pool in pools]
        past = utc_now() - timedelta(seconds=1)
        key_ids = []
        for number in range(20):
            secret = key_material.new_secret("secret", "live")
            command = GenerateKey(
                key_id=new_key_id(),
                org_id="acme",
                name=f"key {number}",
                type="secret",
                environment="live",
                issued_at=past - timedelta(minutes=1),
                secret_hash=key_material.secret_hash(b"p", secret),
                expires_at=past,
            )
            await handlers[0].handle(command, org_id="acme", actor=Actor(id="t"))
            key_ids.append(command.key_id)
        sweepers = [ExpirySweeper(handler, interval_seconds=1.0) for handler in handlers]
        written = await asyncio.gather(*(s.sweep_once() for s in sweepers))
        written += await asyncio.gather(*(s.sweep_once() for s in sweepers))
        assert sum(written) == len(key_ids)
        rows = await pools[0].fetch(
            "SELECT key_id, count(*) AS n FROM events"
            " WHERE event_type = 'KeyExpired' GROUP BY key_id"
        )
        assert {r["key_id"]: r["n"] for r in rows} == dict.fromkeys(key_ids, 1)
    finally:
        for pool in pools:
            await pool.close()
