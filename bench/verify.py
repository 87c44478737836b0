"""Verification benchmarks (issue 5): ``python -m bench.verify``.

(a) bearer ``POST /v1/verify`` beside a bare aiohttp handler served by the
    same event loop in the same run, 32 connections, load from ``wrk`` in a
    separate process; (b) signed-request verify (ed25519, rsa-2048), same way;
(c) revocation propagation across three ``keyledger serve`` replicas;
(d) index memory per key at 1M keys (tracemalloc, live bytes).

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
import re
import secrets
import shutil
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from bench.support import running_replicas, scratch_database
from events.models import Actor, KeyGenerated
from events.vocabulary import ALGORITHMS
from service.embedded import EmbeddedNats, EmbeddedPostgres, free_port
from service.http.app import create_app
from service.http.context import KEYLEDGER
from service.log_config import configure_logging
from service.service_keys import issue_service_key
from service.settings import Settings
from service.verification.index import VerificationIndex
from service.verification.signing import sign, signing_payload

CONNECTIONS = 32


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _wrk(
    url: str, body: dict[str, Any], headers: dict[str, str], seconds: int, method: str = "POST"
) -> dict[str, float]:
    """Run wrk against ``url`` in a separate process; requests/s, p50 and p99 in ms."""
    lines = [f'wrk.method = "{method}"']
    if method == "POST":
        lines.append(f"wrk.body = {json.dumps(json.dumps(body))}")
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}" for k, v in headers.items()]
    if method == "POST":
        lines.append('wrk.headers["Content-Type"] = "application/json"')
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write("\n".join(lines) + "\n")
    process = await asyncio.create_subprocess_exec(
        "wrk",
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        script.name,
        url,
        stdout=asyncio.subprocess.PIPE,
    )
    output = (await process.communicate())[0].decode()
    os.unlink(script.name)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if non_2xx:
        raise RuntimeError(f"wrk saw {non_2xx[1]} error responses:\n{output}")

    def latency(label: str) -> float:
        match = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", output, re.M)
        assert match, output
        return float(match[1]) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[match[2]]

    requests = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert requests, output
    rps = float(requests[1])
    return {"rps": rps, "p50": latency("50"), "p99": latency("99")}


async def _bare_handler(request: web.Request) -> web.Response:
    await request.read()
    return web.json_response({"valid": True, "code": "VALID", "http_status": 200, "key": None})


async def bench_http(database_url: str, seconds: int) -> list[str]:
    """(a) and (b): the API and a bare handler on one loop, loaded by wrk."""
    settings = Settings.from_env({}, database_url=database_url, pepper=secrets.token_hex(16))
    api, bare = create_app(settings), web.Application()
    bare.router.add_post("/bare", _bare_handler)
    runners = [web.AppRunner(api, access_log=None), web.AppRunner(bare, access_log=None)]
    ports = [free_port(), free_port()]
    for runner, port in zip(runners, ports, strict=True):
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    base, bare_url = f"http://127.0.0.1:{ports[0]}", f"http://127.0.0.1:{ports[1]}/bare"
    try:
        admin = await issue_service_key(
            api[KEYLEDGER].pool,
            settings.pepper_bytes,
            name="bench",
            scopes=["admin"],
            actor=Actor(id="bench"),
        )
        await api[KEYLEDGER].verifier.feed.wait_for(admin.position, 10.0)
        auth = {"Authorization": f"Bearer {admin.secret}"}
        async with aiohttp.ClientSession(headers=auth) as http:
            bearer = await _generate(http, base, {"name": "b", "type": "secret", "scopes": ["a:*"]})
            signing = {
                algo: await _generate(
                    http, base, {"name": algo, "type": "signing", "algorithm": algo}
                )
                for algo in ALGORITHMS
            }
            last = max(k["position"] for k in [bearer, *signing.values()])
            async with http.post(
                f"{base}/v1/verify", json={"key": bearer["secret"], "min_position": last}
            ) as r:
                assert (await r.json())["code"] == "VALID"
        verify_body = {"key": bearer["secret"], "scopes": ["a:read"]}
        rows: list[tuple[str, dict[str, float], float | None]] = []
        bare_result = await _wrk(bare_url, verify_body, auth, seconds)
        # The same middleware (request id, error mapping, one JSON log line) as verify.
        healthz = await _wrk(f"{base}/healthz", {}, {}, seconds, method="GET")
        bearer_result = await _wrk(f"{base}/v1/verify", verify_body, auth, seconds)
        rows.append(("bare aiohttp handler (same loop)", bare_result, None))
        rows.append(
            (
                "GET /healthz (keyledger middleware only)",
                healthz,
                healthz["rps"] / bare_result["rps"],
            )
        )
        rows.append(
            ("POST /v1/verify bearer", bearer_result, bearer_result["rps"] / bare_result["rps"])
        )
        for algo, created in signing.items():
            body = '{"symbol": "OIL-BTC", "side": "buy", "qty": 12}'
            signed = {
                "key_id": created["key"]["id"],
                "method": "POST",
                "path": "/api/v1/orders",
                "body": body,
                "signature": sign(
                    created["private_key"], signing_payload("POST", "/api/v1/orders", body)
                ),
            }
            result = await _wrk(f"{base}/v1/verify", signed, auth, seconds)
            rows.append(
                (f"POST /v1/verify signed {algo}", result, result["rps"] / bare_result["rps"])
            )
    finally:
        for runner in runners:
            await runner.cleanup()
    out = ["| target | requests/s | p50 ms | p99 ms | × bare |", "|---|---:|---:|---:|---:|"]
    for name, result, ratio in rows:
        ratio_text = f"{ratio:.2f}" if ratio is not None else "1.00"
        figures = f"{result['rps']:.0f} | {result['p50']:.2f} | {result['p99']:.2f}"
        out.append(f"| {name} | {figures} | {ratio_text} |")
    return out


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
    parser.add_argument("--parts", default="abcd", help="which of a, b, c, d to run")
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per target")
    parser.add_argument("--rounds", type=int, default=200, help="revocations for (c)")
    parser.add_argument("--keys", type=int, default=1_000_000, help="index size for (d)")
    args = parser.parse_args()
    if ("a" in args.parts or "b" in args.parts) and not shutil.which("wrk"):
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
            async with scratch_database(server_url, prefix="keyledger_bench") as url:
                report += ["", "(a)/(b) verify over HTTP, wrk -t1 -c32, one 2-core machine:", ""]
                report += await bench_http(url, args.seconds)
        if "c" in args.parts:
            async with scratch_database(server_url, prefix="keyledger_bench") as url:
                report += [
                    "",
                    "(c) " + "\n".join(await bench_propagation(url, nats_url, args.rounds)),
                ]
        if "d" in args.parts:
            report += ["", "(d) " + "\n".join(bench_memory(args.keys))]
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
