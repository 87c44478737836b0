"""Verification benchmarks (issues 5 and 13): ``python -m bench.verify``.

(a) bearer ``POST /v1/verify`` beside a bare aiohttp handler served by the
    same event loop of one server process (``bench.verify_server``), once per
    event loop (asyncio, uvloop) and per build of the verify path (these
    sources interpreted, and a copy with it compiled: setup.py,
    ``bench.compiled_tree``), 32 connections, load from ``wrk`` in a
    process of its own; each row has requests/s, p50/p99 and the server's CPU
    µs per request (``/proc/<pid>/stat``), the steadier figure on a shared
    machine; then a flood of random well-formed keys, with the database round
    trips the verify path made meanwhile (0 expected);
(b) signed-request verify (ed25519, rsa-2048), same way;
(c) revocation propagation across three ``keyledger serve`` replicas;
(d) index memory per key at 1M keys (tracemalloc, live bytes);
(e) ``keyledger serve --workers N`` for N = 1, 2: bearer verify throughput,
    CPU per request over all workers, resident memory per worker;
(f) cold start at 1M keys (``bench.cold_start``, from a registry snapshot): the
    time from a replica's process start to ``/readyz`` 200, its CPU and RSS.

Needs PostgreSQL (``KEYLEDGER_TEST_DATABASE_URL``, else embedded) and, for
(c), NATS (``KEYLEDGER_TEST_NATS_URL``, else embedded); ``wrk`` on PATH.
Results are printed as Markdown, ready for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.cold_start import run as cold_start
from bench.compiled_tree import build as build_compiled_tree
from bench.support import running_replicas, scratch_database
from bench.wrk import TABLE_HEAD, Load, lua_script, rss_mib, run_wrk
from events.models import Actor, KeyGenerated
from service.domain.key_material import new_secret
from service.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from service.event_loop import resolved_loop
from service.log_config import configure_logging
from service.service_keys import issue_service_key
from service.verification.index import VerificationIndex

FLOOD_KEYS = 2000


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _server(
    database_url: str, loop: str, linger_ms: float = 0.0, tree: Path | None = None
) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    """``bench.verify_server`` on ``loop``, and its ready line (ports, credentials).

    ``tree``: a copy of the sources to serve from (``bench.compiled_tree``), else this one.
    """
    environment = None if tree is None else {**os.environ, "PYTHONPATH": str(tree)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.verify_server",
        database_url,
        "--loop",
        loop,
        "--access-log-linger-ms",
        str(linger_ms),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=tree,
        env=environment,
    )
    assert process.stdout is not None
    line = await process.stdout.readline()
    if not line:
        raise RuntimeError(f"bench.verify_server ({loop}) did not start")
    return process, json.loads(line)


async def _stop(process: asyncio.subprocess.Process) -> None:
    assert process.stdin is not None
    process.stdin.close()  # the server stops when its stdin closes
    await process.wait()


async def bench_same_loop(
    database_url: str, loop: str, seconds: int, linger_ms: float = 0.0, tree: Path | None = None
) -> list[str]:
    """(a)/(b): the API and a bare aiohttp handler served by one process on one ``loop``
    (from ``tree``, a compiled copy of the sources, when given)."""
    process, ready = await _server(database_url, loop, linger_ms, tree)
    pids = [process.pid]
    base, auth = f"http://127.0.0.1:{ready['api']}", ready["auth"]
    bearer_body = {"key": ready["bearer"], "scopes": ["a:read"]}
    try:
        bare = await run_wrk(
            f"http://127.0.0.1:{ready['bare']}/bare",
            lua_script(body=bearer_body, headers=auth),
            seconds,
            pids,
        )
        rows = [bare.row("bare aiohttp handler (same loop)", None)]
        targets = [
            ("GET /healthz (request context only)", "/healthz", lua_script("GET")),
            ("POST /v1/verify bearer", "/v1/verify", lua_script(body=bearer_body, headers=auth)),
        ]
        for algorithm, signed in ready["signed"].items():
            script = lua_script(body=signed, headers=auth)
            targets.append((f"POST /v1/verify signed {algorithm}", "/v1/verify", script))
        for name, path, script in targets:
            load = await run_wrk(f"{base}{path}", script, seconds, pids)
            rows.append(load.row(name, bare))
        flood = await _flood(ready, seconds)
    finally:
        await _stop(process)
    linger = f", access log linger {linger_ms:g} ms" if linger_ms else ""
    heading = f"Event loop: {ready['loop']}, verify path {ready['hot_path']}{linger}"
    return [heading, "", *TABLE_HEAD, *rows, "", flood]


async def _flood(ready: dict[str, Any], seconds: int) -> str:
    """Random well-formed keys at full speed; the verify path's database use before/after."""
    counts_url = f"http://127.0.0.1:{ready['bare']}/counts"
    async with aiohttp.ClientSession() as http:
        async with http.get(counts_url) as response:
            before = await response.json()
        bodies = [{"key": new_secret("secret", "live")} for _ in range(FLOOD_KEYS)]
        load = await run_wrk(
            f"http://127.0.0.1:{ready['api']}/v1/verify",
            lua_script(headers=ready["auth"], bodies=bodies),
            seconds,
            [],
        )
        async with http.get(counts_url) as response:
            after = await response.json()
    not_found = after["outcomes"].get("NOT_FOUND", 0) - before["outcomes"].get("NOT_FOUND", 0)
    queries = after["acquired"] - before["acquired"]
    return (
        f"Flood of {FLOOD_KEYS:,} random well-formed keys, cycled: {load.requests:,} requests"
        f" at {load.rps:.0f}/s, {not_found:,} NOT_FOUND verdicts, {queries} database round"
        " trips on the verify path (connections taken by the verifier and the authenticator)."
    )


async def bench_workers(database_url: str, counts: list[int], seconds: int) -> list[str]:
    """(e): ``keyledger serve --workers N``, bearer verify with wrk, CPU and memory per worker."""
    rows = [
        "| workers | requests/s | p50 ms | p99 ms | server CPU µs/request"
        " | × 1 worker (req/s) | × 1 worker (CPU) |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    memory = []
    single: Load | None = None
    loop = resolved_loop("auto")
    for count in counts:
        async with scratch_database(database_url, prefix="keyledger_bench") as url:
            load, rss = await _served_load(url, count, seconds)
        rows.append(load.row(f"{count}", single))
        single = single or load
        memory.append(f"{count}: " + ", ".join(f"{mib:.0f}" for mib in rss))
    return [
        f"`keyledger serve --workers N` ({loop} loop), bearer `POST /v1/verify`, wrk -t1 -c32:",
        "",
        *rows,
        "",
        "Resident memory per worker after the run, MiB (index nearly empty; add the index's"
        " bytes per key × keys for each worker): " + "; ".join(memory),
    ]


async def _served_load(database_url: str, count: int, seconds: int) -> tuple[Load, list[float]]:
    pepper = "bench-" + secrets.token_hex(16)
    port = free_port()
    env = {
        **os.environ,
        "KEYLEDGER_DATABASE_URL": database_url,
        "KEYLEDGER_PEPPER": pepper,
        "KEYLEDGER_PORT": str(port),
        "KEYLEDGER_HOST": "127.0.0.1",
        "KEYLEDGER_NATS_URL": "",
    }
    command = [str(Path(sys.executable).parent / "keyledger"), "serve", "--workers", str(count)]
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        await process.stdout.readline()  # the ready line
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        admin = await issue_service_key(
            pool, pepper.encode(), name="bench", scopes=["admin"], actor=Actor(id="bench")
        )
        await pool.close()
        base, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {admin.secret}"}
        new_key = {"name": "b", "type": "secret", "scopes": ["a:*"]}
        created = await _fresh(base, "/v1/orgs/bench/keys", new_key, auth)
        body = {"key": created["secret"], "min_position": created["position"]}
        for _ in range(8 * count):  # new connections, so every worker's index has the key
            assert (await _fresh(base, "/v1/verify", body, auth))["code"] == "VALID"
        workers = _children(process.pid) if count > 1 else [process.pid]
        load = await run_wrk(
            f"{base}/v1/verify",
            lua_script(body={"key": created["secret"], "scopes": ["a:read"]}, headers=auth),
            seconds,
            workers,
        )
        return load, [rss_mib(pid) for pid in workers]
    finally:
        process.terminate()
        await process.wait()


async def _fresh(
    base: str, path: str, body: dict[str, Any], auth: dict[str, str]
) -> dict[str, Any]:
    """POST on a new connection (any worker), until the worker knows the service key."""
    for _ in range(100):
        async with (
            aiohttp.ClientSession(headers=auth) as http,
            http.post(f"{base}{path}", json=body) as response,
        ):
            if response.status != 401:
                assert response.status in (200, 201), await response.text()
                answer: dict[str, Any] = await response.json()
                return answer
        await asyncio.sleep(0.1)
    raise TimeoutError(f"{base} never accepted the bench's service key")


def _children(pid: int) -> list[int]:
    return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def _generate(http: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(f"{base}/v1/orgs/bench/keys", json=body) as response:
        assert response.status == 201, await response.text()
        created: dict[str, Any] = await response.json()
        return created


async def bench_propagation(database_url: str, nats_url: str | None, rounds: int) -> list[str]:
    """(c): revoke through one replica; time until each of three refuses the key."""
    async with running_replicas(3, database_url, nats_url, log_level="warning") as replicas:
        pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        admin = await issue_service_key(
            pool, replicas.pepper.encode(), name="bench", scopes=["admin"], actor=Actor(id="bench")
        )
        await pool.close()
        delays: list[float] = []
        after_ack: list[float] = []
        auth = {"Authorization": f"Bearer {admin.secret}"}
        async with aiohttp.ClientSession(headers=auth) as http:
            await replicas.until_accepted(http, admin.secret)
            for number in range(rounds):
                via = replicas.urls[number % 3]
                created = await _generate(http, via, {"name": f"r{number}", "type": "secret"})
                for url in replicas.urls:
                    body = {"key": created["secret"], "min_position": created["position"]}
                    async with http.post(f"{url}/v1/verify", json=body) as r:
                        assert (await r.json())["code"] == "VALID"
                started = time.perf_counter()
                revoke = _revoke(http, f"{via}/v1/orgs/bench/keys/{created['key']['id']}/revoke")
                watchers = [
                    _time_until_revoked(http, url, created["secret"], started)
                    for url in replicas.urls
                ]
                acknowledged, *replica_delays = await asyncio.gather(revoke, *watchers)
                delays.extend(replica_delays)
                after_ack.extend(max(0.0, d - (acknowledged - started)) for d in replica_delays)
    ms, ack_ms = [d * 1000 for d in delays], [d * 1000 for d in after_ack]
    return [
        f"{rounds} revocations × 3 replicas, until each replica answers REVOKED. "
        f"From sending the revoke: p50 {_percentile(ms, 0.5):.1f} ms, "
        f"p99 {_percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms. "
        f"After the revoke's 200 came back (0 if already refused): "
        f"p50 {_percentile(ack_ms, 0.5):.1f} ms, p99 {_percentile(ack_ms, 0.99):.1f} ms, "
        f"max {max(ack_ms):.1f} ms",
    ]


async def _revoke(http: aiohttp.ClientSession, url: str) -> float:
    async with http.post(url, json={"reason": "compromised"}) as response:
        assert response.status == 200, await response.text()
    return time.perf_counter()


async def _time_until_revoked(
    http: aiohttp.ClientSession, url: str, secret: str, since: float
) -> float:
    while time.perf_counter() - since < 10:
        async with http.post(f"{url}/v1/verify", json={"key": secret}) as response:
            if (await response.json())["code"] == "REVOKED":
                return time.perf_counter() - since
    raise TimeoutError(f"{url} did not refuse the key within 10 s")


def bench_memory(keys: int) -> list[str]:
    """(d): live bytes per key of an index of ``keys`` secret keys."""
    orgs = [f"org-{n:04d}" for n in range(1000)]
    scope_sets = [("orders:*",), ("orders:read", "prices:read"), ()]
    created = datetime(2030, 1, 1, tzinfo=UTC)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    index = VerificationIndex()
    for number in range(keys):
        index.apply_event(
            KeyGenerated(
                key_id=f"key_01J{number:023d}",
                org_id=orgs[number % 1000],
                occurred_at=created,
                name=f"Trading Bot {number}",
                type="secret",
                environment="live",
                scopes=scope_sets[number % 3],
                secret_hash=secrets.token_hex(32),
                expires_at=created + timedelta(days=90) if number % 4 == 0 else None,
            )
        )
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return [
        f"{len(index):,} secret keys (names ~17 chars, 1000 orgs, 1/4 with expires_at): "
        f"{used / 2**20:.0f} MiB live, {used / keys:.0f} bytes per key"
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="abcdef", help="which of a, b, c, d, e, f to run")
    parser.add_argument("--seconds", type=int, default=5, help="wrk duration per target")
    parser.add_argument(
        "--loops", default="asyncio,uvloop", help="event loops for (a)/(b), comma-separated"
    )
    parser.add_argument("--workers", default="1,2", help="worker counts for (e)")
    parser.add_argument(
        "--access-log-linger-ms",
        default="0",
        help="KEYLEDGER_ACCESS_LOG_LINGER_MS values for (a)/(b), comma-separated (0: production's"
        " default)",
    )
    parser.add_argument(
        "--hot-path",
        default="interpreted,compiled",
        help="verify path builds for (a)/(b), comma-separated: interpreted (these sources),"
        " compiled (a copy built by setup.py with KEYLEDGER_COMPILE=1, ≈ 30 s)",
    )
    parser.add_argument("--rounds", type=int, default=200, help="revocations for (c)")
    parser.add_argument("--keys", type=int, default=1_000_000, help="index size for (d), (f)")
    args = parser.parse_args()
    if set("abe") & set(args.parts) and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    workdir = Path(tempfile.mkdtemp(prefix="keyledger-bench-"))
    given_url = os.environ.get("KEYLEDGER_TEST_DATABASE_URL")
    embedded_pg = None if given_url else EmbeddedPostgres(workdir / "pg")
    server_url = embedded_pg.start() if embedded_pg is not None else given_url or ""
    nats_url = os.environ.get("KEYLEDGER_TEST_NATS_URL")
    embedded_nats = None if nats_url or "c" not in args.parts else EmbeddedNats(workdir / "nats")
    nats_url = nats_url or (embedded_nats.start() if embedded_nats else None)
    report = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `python -m bench.verify --parts {args.parts}`"
    ]
    try:
        if "a" in args.parts or "b" in args.parts:
            report += ["", "(a)/(b) verify over HTTP, wrk -t1 -c32 in its own process:"]
            trees = {
                "interpreted": None,
                "compiled": (workdir / "compiled") if "compiled" in args.hot_path else None,
            }
            if trees["compiled"] is not None:
                build_compiled_tree(trees["compiled"])
            for build in args.hot_path.split(","):
                for loop in args.loops.split(","):
                    for linger in (float(ms) for ms in args.access_log_linger_ms.split(",")):
                        async with scratch_database(server_url, prefix="keyledger_bench") as url:
                            rows = await bench_same_loop(
                                url, loop, args.seconds, linger, trees[build]
                            )
                            report += ["", *rows]
        if "c" in args.parts:
            async with scratch_database(server_url, prefix="keyledger_bench") as url:
                report += [
                    "",
                    "(c) " + "\n".join(await bench_propagation(url, nats_url, args.rounds)),
                ]
        if "d" in args.parts:
            report += ["", "(d) " + "\n".join(bench_memory(args.keys))]
        if "e" in args.parts:
            counts = [int(n) for n in args.workers.split(",")]
            report += [
                "",
                "(e) " + "\n".join(await bench_workers(server_url, counts, args.seconds)),
            ]
        if "f" in args.parts:
            started = await cold_start(server_url, args.keys, False, skip_log_only=True)
            report += ["", "(f) cold start " + "\n".join(started)]
    finally:
        if embedded_nats:
            embedded_nats.stop()
        if embedded_pg:
            embedded_pg.stop()
    print("\n".join(report))


if __name__ == "__main__":
    # Production logging (one JSON line per request), written to nowhere.
    configure_logging("info", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives for the run
    asyncio.run(main())
