"""CPU per GenerateKey without sockets: ``python -m bench.generate_key_cpu``.

The whole replica runs in this process (``create_app``: the group-commit
writer, the verification index, the projections and, with NATS, the outbox
relay), and raw ``POST /v1/orgs/{org}/keys`` requests, each in a fresh org,
are fed to its protocol objects over an in-memory transport
(``bench.verify_cpu.MemoryTransport``). Each round sends one request on each
of ``--connections`` connections and waits for every answer; after the last
round the projections and the relay are waited for until they reach the log
head, so their share of the work counts too.

Reported per key made: this process's CPU µs (user + system: the Python work
of the request, the commit and everything that follows it, without the
kernel's share of HTTP sockets, which ``bench.generate_key`` includes but
which varies with the machine's load), the CPU µs of the database's server
processes serving this run's connections (those open from the start of a
repeat to its end: a connection the pool opens meanwhile is not counted),
and the database's transactions. Repeats interleave with nothing else; the
minimum is the least disturbed by other processes on a shared machine, and
``--profile`` prints where the time of the last repeat went (cProfile, by
own time).

Needs ``KEYLEDGER_TEST_DATABASE_URL`` (a scratch database is made and dropped);
``KEYLEDGER_TEST_NATS_URL`` too, or the relay does not run (``--no-nats``).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import os
import pstats
import statistics
import time
import uuid
from collections.abc import Callable

import asyncpg
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from bench.support import delete_stream, scratch_database
from bench.verify_cpu import MemoryTransport, raw_request
from bench.wrk import cpu_seconds
from events.models import Actor
from service.bootstrap import Keyledger
from service.event_loop import loop_factory
from service.garbage_collection import settle_after_start
from service.http.app import create_app
from service.http.context import KEYLEDGER
from service.log_config import configure_logging
from service.service_keys import issue_service_key
from service.settings import Settings

PEPPER = "bench-generate-key-cpu-pepper-0123456789"


class AnsweredTransport(MemoryTransport):
    """A ``MemoryTransport`` that wakes a waiter at each answer (the writer waits on the
    database: polling turns would spin this process's CPU meanwhile)."""

    def __init__(self) -> None:
        super().__init__()
        self.answered = asyncio.Event()

    def write(self, data: object) -> None:
        super().write(data)
        self.answered.set()

    async def until(self, answers: int) -> None:
        """Wait until ``answers`` answers have been written."""
        while self.answers < answers:
            self.answered.clear()
            await self.answered.wait()


BODY = b'{"name":"k","type":"secret"}'


async def _transactions(pool: asyncpg.Pool) -> int:
    """Transactions committed or rolled back in this database so far (statements outside
    one count one each); the statistics lag a little, so read after the load has settled."""
    async with pool.acquire() as conn:
        await conn.execute("SELECT pg_stat_force_next_flush()")
        count: int = await conn.fetchval(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = current_database()"
        )
    return count


async def _backends(pool: asyncpg.Pool) -> list[int]:
    """Process ids of the database server's backends serving this database now."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
        )
    return [row[0] for row in rows]


def _cpu_by_pid(pids: list[int]) -> dict[int, float]:
    """``cpu_seconds`` of each of ``pids`` still running."""
    used = {}
    for pid in pids:
        try:
            used[pid] = cpu_seconds([pid])
        except FileNotFoundError:  # ended (a connection the pool closed)
            continue
    return used


def _cpu_since(before: dict[int, float]) -> float:
    """CPU seconds the backends of ``before`` used since, those alive at both ends."""
    after = _cpu_by_pid(list(before))
    return sum(after[pid] - before[pid] for pid in after)


async def _settled(service: Keyledger) -> None:
    """Wait until the projections and the relay have reached the log head."""
    async with service.pool.acquire() as conn:
        head = await service.commands.store.head(conn)
    for name in service.projections.lag():
        while not await service.projections.wait_for(name, head, within=1.0):
            pass
    relay = service.relay
    while relay is not None and relay.published_position < head:
        relay.wake()
        await asyncio.sleep(0.002)


async def cpu_per_key(
    server: Callable[[], RequestHandler],
    service: Keyledger,
    headers: dict[str, str],
    rounds: int,
    connections: int,
    profile: cProfile.Profile | None,
) -> tuple[float, float, float]:
    """(this process's, the database's) CPU µs per key over ``rounds`` × ``connections``,
    and the database's transactions per key."""
    run = uuid.uuid4().hex[:10]
    requests = [
        [
            raw_request("POST", f"/v1/orgs/b{run}-{c}-{r}/keys", headers, BODY)
            for c in range(connections)
        ]
        for r in range(rounds)
    ]
    pairs = []
    for _ in range(connections):
        protocol, transport = server(), AnsweredTransport()
        protocol.connection_made(transport)
        pairs.append((protocol, transport))
    backends = await _backends(service.pool)
    await _settled(service)
    transactions = await _transactions(service.pool)
    started, database_started = time.process_time(), _cpu_by_pid(backends)
    if profile is not None:
        profile.enable()
    for number, batch in enumerate(requests, start=1):
        for (protocol, _transport), request in zip(pairs, batch, strict=True):
            protocol.data_received(request)
        for _protocol, transport in pairs:
            await transport.until(number)
            if not transport.last.startswith(b"HTTP/1.1 201 "):
                raise RuntimeError(f"not a 201 answer: {transport.last[:300]!r}")
    await _settled(service)
    if profile is not None:
        profile.disable()
    used = time.process_time() - started
    database = _cpu_since(database_started)
    # Less the two of the counting itself.
    transactions = await _transactions(service.pool) - transactions - 2
    for protocol, _transport in pairs:
        protocol.connection_lost(None)
    made = rounds * connections
    return used / made * 1e6, database / made * 1e6, transactions / made


async def measure(
    database_url: str, nats_url: str | None, args: argparse.Namespace
) -> tuple[list[float], list[float], list[float], str]:
    """Per repeat: µs of this process and of the database, and transactions, per key;
    the profile's text."""
    token = uuid.uuid4().hex[:10]
    settings = Settings.from_env(
        {},
        database_url=database_url,
        pepper=PEPPER,
        nats_url=nats_url,
        nats_stream=f"BENCH_{token}",
        nats_subject_prefix=f"bench.{token}",
        max_active_keys_per_org=10,
    )
    runner = web.AppRunner(create_app(settings), access_log=None)
    await runner.setup()
    try:
        service = runner.app[KEYLEDGER]
        admin = await issue_service_key(
            service.pool, PEPPER.encode(), name="bench", scopes=["admin"], actor=Actor(id="b")
        )
        await service.feed.wait_for(admin.position, 10.0)
        headers = {"Authorization": f"Bearer {admin.secret}", "Content-Type": "application/json"}
        server = runner.server
        assert server is not None
        await cpu_per_key(server, service, headers, 5, args.connections, None)  # warm-up
        settle_after_start()  # as ``keyledger serve`` does once it listens
        ours, theirs, transactions = [], [], []
        profile = None
        for repeat in range(args.repeats):
            if args.profile and repeat == args.repeats - 1:
                profile = cProfile.Profile()
            mine, database, made = await cpu_per_key(
                server, service, headers, args.rounds, args.connections, profile
            )
            ours.append(mine)
            theirs.append(database)
            transactions.append(made)
    finally:
        await runner.cleanup()
        if nats_url:
            await delete_stream(nats_url, settings.nats_stream)
    text = ""
    if profile is not None:
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(args.profile)
        text = out.getvalue()
    return ours, theirs, transactions, text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="uvloop")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=40, help="requests per connection")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-nats", action="store_true", help="run without the relay")
    parser.add_argument("--profile", type=int, default=0, help="print the N costliest functions")
    args = parser.parse_args()
    configure_logging("warning", stream=open(os.devnull, "w"))  # noqa: SIM115 - lives for the run
    server_url = os.environ["KEYLEDGER_TEST_DATABASE_URL"]
    nats_url = None if args.no_nats else os.environ.get("KEYLEDGER_TEST_NATS_URL")

    async def run() -> tuple[list[float], list[float], list[float], str]:
        async with scratch_database(server_url, prefix="keyledger_bench") as url:
            return await measure(url, nats_url, args)

    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        ours, theirs, transactions, profile = runner.run(run())
    relay = "relay on" if nats_url else "no relay"
    print(
        f"GenerateKey in-process ({args.loop}, {args.connections} connections,"
        f" {args.rounds} rounds, {relay}), CPU µs per key:"
    )
    print("\n| | min | median |\n|---|---:|---:|")
    print(f"| keyledger process | {min(ours):.0f} | {statistics.median(ours):.0f} |")
    print(f"| database backends | {min(theirs):.0f} | {statistics.median(theirs):.0f} |")
    print(
        f"\nDatabase transactions per key: {min(transactions):.2f}"
        f" (median {statistics.median(transactions):.2f})"
    )
    if profile:
        print(profile)


if __name__ == "__main__":
    main()
