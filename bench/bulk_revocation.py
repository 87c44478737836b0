"""Bulk revocation of 1,000 keys: commit time, and until 3 replicas refuse them all (issue 12).

Three ``keyledger serve`` processes share one PostgreSQL and one NATS, each
with its own verification index following the log (as in production). The
client runs here, in its own process. Measured in the same run:

- ``POST /v1/orgs/bench/revocations {"all": true}`` through replica 1: the
  time until its answer (one transaction with every ``KeyRevoked``,
  committed, and applied to that replica's index before it answers);
- from sending it, the time until each replica refuses the revoked key with
  the highest log position: each index applies positions strictly in order,
  so from then on it refuses all of them (checked afterwards, key by key);
- baseline: a raw multi-row ``INSERT`` of as many event-sized rows (one
  statement, one transaction) into a table shaped like ``events``;
- baseline: a single revocation, from sending it until all 3 replicas refuse
  the key (``--rounds`` of them: p50 and p99).

    python -m bench.bulk_revocation [--keys 1000] [--rounds 20]

Uses ``KEYLEDGER_TEST_DATABASE_URL`` / ``KEYLEDGER_TEST_NATS_URL`` (else
embedded servers), in a scratch database and a stream of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.support import migrated_database, running_replicas
from events.models import Actor
from service.embedded import EmbeddedNats, EmbeddedPostgres
from service.log_config import configure_logging
from service.service_keys import issue_service_key

ORG = "bench"


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _generate(
    http: aiohttp.ClientSession, url: str, org: str, count: int
) -> list[dict[str, Any]]:
    """``count`` keys in ``org`` through ``url``, 16 at a time."""
    lanes = asyncio.Semaphore(16)

    async def one(number: int) -> dict[str, Any]:
        async with (
            lanes,
            http.post(
                f"{url}/v1/orgs/{org}/keys", json={"name": f"k{number}", "type": "secret"}
            ) as response,
        ):
            assert response.status == 201, await response.text()
            created: dict[str, Any] = await response.json()
            return created

    return list(await asyncio.gather(*(one(n) for n in range(count))))


async def _code(http: aiohttp.ClientSession, url: str, secret: str, **extra: Any) -> str:
    async with http.post(f"{url}/v1/verify", json={"key": secret, **extra}) as response:
        code: str = (await response.json())["code"]
        return code


async def _until_refused(http: aiohttp.ClientSession, url: str, secret: str, since: float) -> float:
    """Seconds from ``since`` until ``url`` answers REVOKED for ``secret``."""
    while time.perf_counter() - since < 30:
        if await _code(http, url, secret) == "REVOKED":
            return time.perf_counter() - since
    raise TimeoutError(f"{url} did not refuse the key within 30 s")


async def _post(http: aiohttp.ClientSession, url: str, body: dict[str, Any]) -> float:
    async with http.post(url, json=body) as response:
        assert response.status == 200, await response.text()
        await response.read()
    return time.perf_counter()


async def bench_single(
    http: aiohttp.ClientSession, urls: tuple[str, ...], rounds: int
) -> tuple[list[float], list[float]]:
    """Per round: seconds from sending one revoke until all replicas refuse the key, and
    until then after its answer came back (0 when all refused it before)."""
    made = await _generate(http, urls[0], "single", rounds)
    await _everywhere(http, urls, made)
    delays, after_answer = [], []
    for number, created in enumerate(made):
        via = urls[number % len(urls)]
        started = time.perf_counter()
        revoke = _post(
            http,
            f"{via}/v1/orgs/single/keys/{created['key']['id']}/revoke",
            {"reason": "compromised"},
        )
        watchers = [_until_refused(http, url, created["secret"], started) for url in urls]
        answered, *each = await asyncio.gather(revoke, *watchers)
        delays.append(max(each))
        after_answer.append(max(0.0, max(each) - (answered - started)))
    return delays, after_answer


async def _everywhere(
    http: aiohttp.ClientSession, urls: tuple[str, ...], made: list[dict[str, Any]]
) -> None:
    """Wait until every replica has applied the last of ``made``."""
    last = max(made, key=lambda m: m["position"])
    for url in urls:
        assert await _code(http, url, last["secret"], min_position=last["position"]) == "VALID"


async def bench_bulk(
    http: aiohttp.ClientSession, urls: tuple[str, ...], keys: int
) -> tuple[float, list[float]]:
    """Seconds until the bulk revocation's answer, and until each replica refuses all."""
    made = await _generate(http, urls[0], ORG, keys)
    await _everywhere(http, urls, made)
    # Keys are revoked in key id order, so the largest id gets the highest position.
    last = max(made, key=lambda m: m["key"]["id"])
    started = time.perf_counter()
    revoke = _post(http, f"{urls[1]}/v1/orgs/{ORG}/revocations", {"reason": "leaked", "all": True})
    watchers = [_until_refused(http, url, last["secret"], started) for url in urls]
    answered, *each = await asyncio.gather(revoke, *watchers)
    for url in urls:
        codes = await asyncio.gather(*(_code(http, url, m["secret"]) for m in made))
        assert set(codes) == {"REVOKED"}, f"{url} still accepts some of the revoked keys"
    return answered - started, each


async def bench_raw_insert(pool: asyncpg.Pool, rows: int, repeats: int = 5) -> float:
    """Median seconds for one multi-row INSERT of ``rows`` event-sized rows, committed."""
    actor = json.dumps({"id": "key_01M8NNFVTW12TNABGXQ5YR3D0J", "request_id": "req_" + "0" * 32})
    data = json.dumps({"reason": "leaked"})
    samples = []
    async with pool.acquire() as conn:
        await conn.execute("CREATE TABLE raw_events (LIKE events INCLUDING ALL)")
        for repeat in range(repeats):
            first = repeat * rows + 1
            began = time.perf_counter()
            async with conn.transaction():
                await conn.execute(
                    """INSERT INTO raw_events (position, event_id, event_type, schema_version,
                           org_id, key_id, stream_version, occurred_at, actor, data, hash)
                       SELECT p, gen_random_uuid(), 'KeyRevoked', 1, 'bench',
                              'key_' || lpad(p::text, 26, '0'), 2, now(), $3::json, $4::json,
                              md5(p::text) || md5(p::text)
                       FROM generate_series($1::bigint, $2::bigint) AS p""",
                    first,
                    first + rows - 1,
                    actor,
                    data,
                )
            samples.append(time.perf_counter() - began)
    return statistics.median(samples)


async def run(server_url: str, nats_url: str, keys: int, rounds: int) -> str:
    token = uuid.uuid4().hex[:8]
    async with migrated_database(server_url, prefix="keyledger_bench") as (url, pool):
        async with running_replicas(
            3, url, nats_url, max_active_keys_per_org=str(keys + rounds), log_level="warning"
        ) as replicas:
            admin = await issue_service_key(
                pool, replicas.pepper.encode(), name=f"bench-{token}", scopes=["admin"],
                actor=Actor(id="bench"),
            )  # fmt: skip
            auth = {"Authorization": f"Bearer {admin.secret}"}
            async with aiohttp.ClientSession(headers=auth) as http:
                await replicas.until_accepted(http, admin.secret)
                single = await bench_single(http, replicas.urls, rounds)
                answered, each = await bench_bulk(http, replicas.urls, keys)
        raw = await bench_raw_insert(pool, keys)
    ms = [d * 1000 for d in each]
    answered_ms = answered * 1000
    after_ms = max(0.0, max(ms) - answered_ms)
    single_ms, single_after_ms = ([d * 1000 for d in v] for v in single)
    single_p50, single_after_p50 = _percentile(single_ms, 0.5), _percentile(single_after_ms, 0.5)
    return "\n".join(
        [
            f"{keys} keys in one org, 3 `keyledger serve` replicas (relay and projections on),"
            " client in its own process. Times from sending the request, and after its answer"
            " came back (0 when every replica refused before it).",
            "",
            "| what | ms from sending | ms after the answer | × baseline |",
            "|---|---:|---:|---:|",
            f"| bulk revocation of {keys} keys answered (one transaction, committed, applied"
            f" to the answering replica's index) | {answered_ms:.1f} | — |"
            f" {answered / raw:.1f}× raw INSERT |",
            f"| …all 3 replicas refuse all {keys} keys (per replica:"
            f" {', '.join(f'{m:.1f}' for m in ms)}) | {max(ms):.1f} | {after_ms:.1f} |"
            f" {max(ms) / single_p50:.1f}× single from sending |",
            f"| baseline: raw multi-row INSERT of {keys} event-sized rows, one transaction"
            f" (median of 5) | {raw * 1000:.1f} | — | 1.0 |",
            f"| baseline: one revocation, all 3 replicas refuse it (p50 of {rounds}; p99"
            f" {_percentile(single_ms, 0.99):.1f} / {_percentile(single_after_ms, 0.99):.1f})"
            f" | {single_p50:.1f} | {single_after_p50:.1f} | 1.0 |",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000, help="keys in the bulk revocation")
    parser.add_argument("--rounds", type=int, default=20, help="single revocations (baseline)")
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="keyledger-bench-"))
    server_url = os.environ.get("KEYLEDGER_TEST_DATABASE_URL")
    embedded_pg = None if server_url else EmbeddedPostgres(workdir / "pg")
    nats_url = os.environ.get("KEYLEDGER_TEST_NATS_URL")
    embedded_nats = None if nats_url else EmbeddedNats(workdir / "nats")
    try:
        server_url = server_url or (embedded_pg.start() if embedded_pg else "")
        nats_url = nats_url or (embedded_nats.start() if embedded_nats else "")
        print(asyncio.run(run(server_url, nats_url, args.keys, args.rounds)))
    finally:
        if embedded_nats:
            embedded_nats.stop()
        if embedded_pg:
            embedded_pg.stop()


if __name__ == "__main__":
    configure_logging("warning")
    main()
