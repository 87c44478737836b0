"""LocalVerifier benchmarks: ``python -m bench.local_verifier``.

(a) a cache hit of ``LocalVerifier.verify``: p50 and p99 in µs, beside a remote
    ``POST /v1/verify`` round trip through the same client, in the same run;
(b) revocation → eviction in 3 LocalVerifiers: from sending RevokeKey to the
    moment each verifier dropped the key's cached verdict, p50 and p99 in ms.

One in-process keyledger (its relay publishing to a stream of its own), the
verifiers in the same process. Needs PostgreSQL (``KEYLEDGER_TEST_DATABASE_URL``,
else embedded) and NATS (``KEYLEDGER_TEST_NATS_URL``, else embedded).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from pathlib import Path

from aiohttp import web

from bench.support import benchmark_servers, delete_stream, scratch_database
from events.models import Actor
from events.servers import nats_servers
from keyledger_client import KeyledgerClient, LocalVerifier
from service.embedded import free_port
from service.http.app import create_app
from service.http.context import KEYLEDGER
from service.log_config import configure_logging
from service.service_keys import issue_service_key
from service.settings import Settings


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _served(
    stack: AsyncExitStack, database_url: str, nats_url: str
) -> tuple[str, str, Settings]:
    token = uuid.uuid4().hex[:10]
    settings = Settings.from_env(
        {},
        database_url=database_url,
        pepper=secrets.token_hex(16),
        nats_url=nats_url,
        nats_stream=f"KLBENCH_{token.upper()}",
        nats_subject_prefix=f"klbench{token}",
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    # Run last: the stream outlives the server.
    stack.push_async_callback(delete_stream, nats_url, settings.nats_stream)
    stack.push_async_callback(runner.cleanup)
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    admin = await issue_service_key(
        app[KEYLEDGER].pool,
        settings.pepper_bytes,
        name="bench",
        scopes=["admin"],
        actor=Actor(id="bench"),
    )
    await app[KEYLEDGER].verifier.feed.wait_for(admin.position, 10.0)
    return f"http://127.0.0.1:{port}", admin.secret, settings


def _verifier(kl: KeyledgerClient, nats_url: str, settings: Settings) -> LocalVerifier:
    return LocalVerifier(
        kl, nats_url, stream=settings.nats_stream, subject_prefix=settings.nats_subject_prefix
    )


async def bench_hits(kl: KeyledgerClient, nats_url: str, settings: Settings, n: int) -> list[str]:
    """(a) cache hits against remote round trips."""
    made = await kl.generate_key("bench-hits", name="hit", type="secret", scopes=["a:read"])
    assert made.secret is not None
    async with _verifier(kl, nats_url, settings) as verifier:
        assert (await verifier.verify(made.secret, scopes=["a:read"])).valid
        hits = []
        for _ in range(n):
            start = time.perf_counter_ns()
            await verifier.verify(made.secret, scopes=["a:read"])
            hits.append((time.perf_counter_ns() - start) / 1000)
        assert len(verifier.cache) == 1
    remote = []
    for _ in range(max(100, n // 20)):
        start = time.perf_counter_ns()
        await kl.verify(key=made.secret, scopes=["a:read"])
        remote.append((time.perf_counter_ns() - start) / 1000)
    return [
        "| verify | p50 (µs) | p99 (µs) | samples |",
        "|---|---|---|---|",
        f"| LocalVerifier cache hit | {_percentile(hits, 0.5):.1f} | {_percentile(hits, 0.99):.1f}"
        f" | {len(hits)} |",
        f"| remote `POST /v1/verify` (same client, same loop) | {_percentile(remote, 0.5):.0f} |"
        f" {_percentile(remote, 0.99):.0f} | {len(remote)} |",
    ]


async def bench_eviction(
    kl: KeyledgerClient, nats_url: str, settings: Settings, rounds: int
) -> list[str]:
    """(b) revocation → eviction in three verifiers."""
    evicted_at: dict[tuple[int, str], int] = {}

    def timed(index: int) -> Callable[[str, int], None]:
        def note(key_id: str, _: int) -> None:
            evicted_at.setdefault((index, key_id), time.perf_counter_ns())

        return note

    async with AsyncExitStack() as stack:
        verifiers = [
            await stack.enter_async_context(
                LocalVerifier(
                    kl,
                    nats_url,
                    stream=settings.nats_stream,
                    subject_prefix=settings.nats_subject_prefix,
                    on_event=timed(index),
                )
            )
            for index in range(3)
        ]
        latencies: list[float] = []
        for _ in range(rounds):
            made = await kl.generate_key("bench-evict", name="evict", type="secret")
            assert made.secret is not None
            for verifier in verifiers:
                await verifier.wait_for_position(made.position)
                assert (await verifier.verify(made.secret)).valid
            for index in range(3):  # the KeyGenerated event noted its time too
                evicted_at.pop((index, made.key.id), None)
            start = time.perf_counter_ns()
            revoked = await kl.revoke_key("bench-evict", made.key.id, "other")
            for index, verifier in enumerate(verifiers):
                assert await verifier.wait_for_position(revoked.position)
                latencies.append((evicted_at[(index, made.key.id)] - start) / 1e6)
    return [
        "| revocation → eviction, 3 LocalVerifiers | p50 (ms) | p99 (ms) | samples |",
        "|---|---|---|---|",
        f"| from sending RevokeKey to the cached verdict dropped"
        f" | {_percentile(latencies, 0.5):.1f} | {_percentile(latencies, 0.99):.1f}"
        f" | {len(latencies)} |",
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hits", type=int, default=20_000, help="cache hits timed for (a)")
    parser.add_argument("--rounds", type=int, default=100, help="revocations for (b)")
    args = parser.parse_args()
    report = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `python -m bench.local_verifier"
        f" --hits {args.hits} --rounds {args.rounds}`",
        "",
    ]
    workdir = Path(tempfile.mkdtemp(prefix="keyledger-bench-"))
    with benchmark_servers(workdir) as (server_url, given_nats):
        nats_url = nats_servers(given_nats or "")[0]
        async with (
            scratch_database(server_url, prefix="keyledger_bench") as url,
            AsyncExitStack() as stack,
        ):
            base, admin_key, settings = await _served(stack, url, nats_url)
            async with KeyledgerClient(base, admin_key) as kl:
                report += await bench_hits(kl, nats_url, settings, args.hits)
                report += [""] + await bench_eviction(kl, nats_url, settings, args.rounds)
    print("\n".join(report))


if __name__ == "__main__":
    configure_logging("info", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives for the run
    asyncio.run(main())
