"""What usage limits cost at verification (issue 14): ``python -m bench.verify_limits``.

``POST /v1/verify`` with wrk (``bench.verify``'s runner, 32 connections) on
one replica, for a plain bearer key and for keys with two named rate limits,
with credits, of an identity with two shared limits, and with limits,
credits and an IP allowlist together. The
limits are too large to be reached and the credits too many to run out:
what is measured is the bookkeeping, not refusals. With NATS
(``KEYLEDGER_TEST_NATS_URL``) the replica shares its rate limit counts as in
production (a message per burst of requests). Results as a Markdown table.

    python -m bench.verify_limits [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
from typing import Any

import aiohttp
from aiohttp import web

from bench.support import delete_stream, scratch_database
from bench.verify import _generate
from bench.wrk import lua_script, run_wrk
from events.models import Actor
from service.embedded import free_port
from service.http.app import create_app
from service.http.context import KEYLEDGER
from service.log_config import configure_logging
from service.service_keys import issue_service_key
from service.settings import Settings

LIMITS = [
    {"name": "burst", "limit": 1_000_000_000, "window": "1s"},
    {"name": "daily", "limit": 1_000_000_000, "window": "1d"},
]
CREDITS = {"remaining": 10**15}
KEYS: dict[str, dict[str, Any]] = {
    "plain bearer key": {},
    "2 named rate limits": {"rate_limits": LIMITS},
    "credits": {"credits": CREDITS},
    "its identity's 2 shared rate limits": {"identity_id": "bench-customer"},
    "limits + credits + allowed_cidrs": {
        "rate_limits": LIMITS,
        "credits": CREDITS,
        "allowed_cidrs": ["10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32"],
    },
}


async def bench(database_url: str, nats_url: str | None, seconds: int) -> list[str]:
    """One replica, each kind of key loaded by wrk in turn."""
    token = secrets.token_hex(5)
    settings = Settings.from_env(
        {},
        database_url=database_url,
        nats_url=nats_url,
        # A stream and subjects of its own: nothing another run or replica wrote is in them.
        nats_stream=f"BENCH_LIMITS_{token.upper()}",
        nats_subject_prefix=f"benchlimits{token}",
        pepper=secrets.token_hex(16),
    )
    app = create_app(settings)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    rows = []
    try:
        service = app[KEYLEDGER]
        admin = await issue_service_key(
            service.pool, settings.pepper_bytes, name="bench", scopes=["admin"], actor=Actor(id="b")
        )
        await service.feed.wait_for(admin.position, 10.0)
        auth = {"Authorization": f"Bearer {admin.secret}"}
        async with aiohttp.ClientSession(headers=auth) as http:
            async with http.put(
                f"{base}/v1/orgs/bench/identities/bench-customer", json={"rate_limits": LIMITS}
            ) as response:
                assert response.status == 201, await response.text()
            created = {
                name: await _generate(http, base, {"name": name, "type": "secret", **fields})
                for name, fields in KEYS.items()
            }
        await service.feed.wait_for(max(c["position"] for c in created.values()), 10.0)
        plain_rps = None
        for name, key in created.items():
            body = {"key": key["secret"], "ip": "10.1.2.3"}
            script = lua_script("POST", body, auth)
            result = await run_wrk(f"{base}/v1/verify", script, seconds, [os.getpid()])
            plain_rps = plain_rps or result.rps
            rows.append((name, result, result.rps / plain_rps))
    finally:
        await runner.cleanup()
        if nats_url:
            await delete_stream(nats_url, settings.nats_stream)
    sharing = "shared over NATS" if nats_url else "no NATS"
    out = [
        f"verify with usage limits, one replica ({sharing}), wrk -t1 -c32:",
        "",
        "| key | requests/s | p50 ms | p99 ms | server CPU µs/request | × plain |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, result, ratio in rows:
        figures = f"{result.rps:.0f} | {result.p50_ms:.2f} | {result.p99_ms:.2f}"
        out.append(f"| {name} | {figures} | {result.cpu_us_per_request:.0f} | {ratio:.2f} |")
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="wrk duration per key")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk)")
    server_url = os.environ.get("KEYLEDGER_TEST_DATABASE_URL")
    if not server_url:
        raise SystemExit("set KEYLEDGER_TEST_DATABASE_URL (a PostgreSQL server)")
    nats_url = os.environ.get("KEYLEDGER_TEST_NATS_URL")
    async with scratch_database(server_url, prefix="keyledger_bench") as url:
        print("\n".join(await bench(url, nats_url, args.seconds)))


if __name__ == "__main__":
    configure_logging("info", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives for the run
    asyncio.run(main())
