"""What usage analytics cost verification: ``python -m bench.usage_analytics``.

The same replica verifies the same bearer key in a tight loop, in rounds
that alternate analytics off and on (``UsageCounts.enabled``), so machine
noise hits both alike; the median of each is compared. This is the verify
path alone (index lookup, HMAC, policy, counting) without HTTP: the cost of
counting as a share of verification is largest here, so over HTTP the
difference is smaller still. The goal: at most 5 % fewer verifications/s.

Needs PostgreSQL (``KEYLEDGER_TEST_DATABASE_URL``, else embedded).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.support import scratch_database
from events.models import Actor
from service.bootstrap import running
from service.embedded import EmbeddedPostgres
from service.http.verify_routes import VerifyBody
from service.log_config import configure_logging
from service.service_keys import issue_service_key
from service.settings import Settings


async def measure(database_url: str, rounds: int, calls: int) -> list[str]:
    """Median verifications/s with analytics off and on, over ``rounds`` of each."""
    settings = Settings.from_env(
        {}, database_url=database_url, pepper=secrets.token_hex(16), usage_flush_interval_seconds=1
    )
    rates: dict[bool, list[float]] = {False: [], True: []}
    async with running(settings) as service:
        issued = await issue_service_key(
            service.pool,
            settings.pepper_bytes,
            name="bench",
            scopes=["keys:read"],
            actor=Actor(id="b"),
        )
        await service.feed.wait_for(issued.position, 10.0)
        body = VerifyBody(key=issued.secret)
        credential, requirements = body.credential(), body.requirements()
        verify = service.verifier.verify
        assert (await verify(credential, requirements)).code == "VALID"
        for round_number in range(rounds):
            order = (False, True) if round_number % 2 == 0 else (True, False)
            for enabled in order:
                service.usage.counts.enabled = enabled
                started = time.perf_counter()
                for _ in range(calls):
                    await verify(credential, requirements)
                rates[enabled].append(calls / (time.perf_counter() - started))
    off, on = statistics.median(rates[False]), statistics.median(rates[True])
    change = (on - off) / off * 100
    return [
        "| analytics | verifications/s (median) |",
        "|---|---:|",
        f"| off | {off:.0f} |",
        f"| on | {on:.0f} |",
        "",
        f"Change with analytics on: {change:+.1f} % (goal: no worse than −5 %);"
        f" {rounds} rounds of {calls} verifications each, alternating.",
    ]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=20, help="rounds of each (off, on)")
    parser.add_argument("--calls", type=int, default=20_000, help="verifications per round")
    args = parser.parse_args()
    given_url = os.environ.get("KEYLEDGER_TEST_DATABASE_URL")
    embedded = None
    if not given_url:
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="keyledger-bench-")) / "pg")
    server_url = embedded.start() if embedded is not None else given_url or ""
    report = [
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, `python -m bench.usage_analytics"
        f" --rounds {args.rounds} --calls {args.calls}`",
        "",
    ]
    try:
        async with scratch_database(server_url, prefix="keyledger_bench") as url:
            report += await measure(url, args.rounds, args.calls)
    finally:
        if embedded is not None:
            embedded.stop()
    print("\n".join(report))


if __name__ == "__main__":
    configure_logging("info", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives for the run
    asyncio.run(main())
