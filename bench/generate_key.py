"""GenerateKey over HTTP at 1, 32 and 128 clients and on 3 replicas, beside raw INSERTs (issue 12).

The load is what users see: ``keyledger serve`` processes with the outbox
relay (to a JetStream stream of the run's own), the projections and the
verification index running; the clients are wrk (``bench/generate_key.lua``)
in processes of their own, each request making a key in a fresh org. The
baseline, measured in the same run on the same PostgreSQL (a database of its
own, its table emptied before each concurrency) at the same concurrency:
pgbench (also a separate process) doing single-row autocommit ``INSERT``s, the
ceiling of one-row transactions on this PostgreSQL.

    python -m bench.generate_key [--seconds 10] [--clients 1 32 128] [--replicas 3]
        [--replica-clients 32] [--queue-limit N] [--workers N] [--event-loop uvloop]
        [--hot-path interpreted,compiled]

Each load runs once per build: these sources interpreted, and a copy with the
hot paths compiled (setup.py, ``bench.compiled_tree``), against the same baseline.
Every load has new replicas on a new database (``measure_fresh``), so none runs
on what the ones before it wrote.

Rows: keys/s (201s only), p50 and p99 of every request, the server's CPU
milliseconds per key made (user + system time of every ``serve`` process,
workers included, from the start of the load until its relay, projections and
index have settled: the steadier figure on a shared machine), then the same
for the INSERTs, and the ratio of the rates. "3 replicas" spreads ``--replica-clients``
connections over three replicas taking commands at once (one wrk each); its
baseline is the INSERT rate at that concurrency. Needs
``KEYLEDGER_TEST_DATABASE_URL`` and ``KEYLEDGER_TEST_NATS_URL`` (a scratch
database is made on that server and dropped), wrk and pgbench on PATH.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.compiled_tree import build as build_compiled_tree
from bench.support import Replicas, migrated_database, running_replicas
from bench.wrk import cpu_seconds, process_tree
from events.models import Actor
from service.service_keys import issue_service_key

LUA = Path(__file__).resolve().parent / "generate_key.lua"


@dataclass(frozen=True, slots=True)
class Load:
    """What one load produced: the rate, and latency percentiles in milliseconds."""

    rate: float
    p50: float
    p99: float
    failed: int = 0
    # The statuses other than 201 seen (a sample), most frequent first.
    statuses: str = ""
    # Connections it ran on, when fewer than asked (the server's max_connections).
    clients: int | None = None
    # Server CPU milliseconds per key made (GenerateKey only).
    cpu_ms: float | None = None
    # Keys made (201s) or rows inserted.
    made: int = 0


async def _wrk(url: str, token: str, clients: int, seconds: float) -> dict[str, Any]:
    env = {
        **os.environ,
        "KEYLEDGER_BENCH_TOKEN": token,
        "KEYLEDGER_BENCH_RUN": uuid.uuid4().hex[:10],
    }
    process = await asyncio.create_subprocess_exec(
        "wrk",
        f"-t{min(clients, 2)}",
        f"-c{clients}",
        f"-d{max(1, round(seconds))}s",
        "--timeout",
        "10s",
        "-s",
        str(LUA),
        url,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed: {(err or out).decode()[-500:]}")
    return json.loads(out.decode().strip().splitlines()[-1])  # type: ignore[no-any-return]


async def generate_load(urls: list[str], token: str, clients: int, seconds: float) -> Load:
    """``clients`` wrk connections spread over ``urls``, all at once."""
    shares = [clients // len(urls) + (i < clients % len(urls)) for i in range(len(urls))]
    runs = await asyncio.gather(
        *(_wrk(url, token, share, seconds) for url, share in zip(urls, shares, strict=True))
    )
    created = sum(run["created"] for run in runs)
    elapsed = max(run["seconds"] for run in runs)
    # Percentiles of the busiest replica's clients (all equal in load): the worst of them.
    return Load(
        created / elapsed,
        max(run["p50_ms"] for run in runs),
        max(run["p99_ms"] for run in runs),
        int(sum(run["requests"] - run["created"] for run in runs)),
        ", ".join(
            f"{code}×{count}"
            for code, count in Counter(
                " ".join(run["statuses"] for run in runs).split()
            ).most_common()
        ),
        made=created,
    )


async def free_connections(database_url: str) -> int:
    """Connections the server still takes (less a margin for everyone else on it)."""
    conn = await asyncpg.connect(database_url)
    try:
        limit = int(await conn.fetchval("SHOW max_connections"))
        used: int = await conn.fetchval("SELECT count(*) FROM pg_stat_activity")
    finally:
        await conn.close()
    return max(1, limit - used - 20)


def insert_load(database_url: str, clients: int, seconds: float, free: int) -> Load:
    """pgbench: ``clients`` connections (at most ``free``) of single-row autocommit INSERTs."""
    asked, clients = clients, min(clients, free)
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "insert.sql"
        script.write_text(
            "INSERT INTO bench_raw (org, data) VALUES ('bench', '{\"name\": \"k\"}');\n"
        )
        done = _run(
            [
                "pgbench",
                "-n",
                f"-c{clients}",
                f"-j{min(clients, 2)}",
                f"-T{max(1, round(seconds))}",
                "-f",
                str(script),
                "-l",
                f"--log-prefix={folder}/tx",
                database_url,
            ]
        )
        latencies = sorted(
            int(line.split()[2]) / 1000
            for log in Path(folder).glob("tx.*")
            for line in log.read_text().splitlines()
        )
    if not latencies:
        raise RuntimeError(f"pgbench logged no transaction: {done}")
    cut = statistics.quantiles(latencies, n=100)
    rate = len(latencies) / max(1, round(seconds))
    return Load(
        rate, cut[49], cut[98], clients=clients if clients < asked else None, made=len(latencies)
    )


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed: {done.stderr[-500:]}")
    return done.stdout


async def _service_key(database_url: str, replicas: Replicas) -> str:
    async with asyncpg.create_pool(database_url, min_size=1, max_size=2) as pool:
        issued = await issue_service_key(
            pool, replicas.pepper.encode(), name="bench", scopes=["admin"], actor=Actor(id="b")
        )
    async with aiohttp.ClientSession() as session:
        await replicas.until_accepted(session, issued.secret)
    return issued.secret


async def measure_fresh(
    server_url: str,
    nats_url: str,
    replicas: int,
    clients: int,
    seconds: float,
    settings: dict[str, str],
    pepper: str,
    workers: int = 1,
    tree: Path | None = None,
) -> Load:
    """GenerateKey at ``clients`` over ``replicas`` new replicas (run from ``tree``, a
    compiled copy of the sources, when given) on a new database.

    Every load starts from the same log (the warm-up's keys): one that followed another on
    the same database would find a log, registry and index tens of thousands of keys larger, with
    autovacuum working through them, and run slower for it (up to a fifth here), so that
    the order of the loads, not their code, would decide their comparison.
    """
    async with (
        migrated_database(server_url, prefix="keyledger_bench") as (url, _),
        running_replicas(
            replicas, url, nats_url, pepper, workers=workers, tree=tree, **settings
        ) as running,
    ):
        token = await _service_key(url, running)
        urls = list(running.urls)
        pids = process_tree(running.pids)
        await generate_load(urls, token, min(clients, 32), min(seconds, 2.0))  # warm up
        # wrk stops with requests in flight: let the server finish them first.
        await asyncio.sleep(2)
        await _checkpoint(url)
        before = cpu_seconds(pids)
        load = await generate_load(urls, token, clients, seconds)
        # The relay, projections and index work on after the last response: their
        # share of the keys counts too.
        await asyncio.sleep(2)
        cpu_ms = (cpu_seconds(pids) - before) / load.made * 1000 if load.made else None
        return dataclasses.replace(load, cpu_ms=cpu_ms)


async def _checkpoint(url: str, *before: str) -> None:
    """``before``'s statements, then a CHECKPOINT, so that each load starts with none
    pending from the one before.

    Otherwise the WAL of one load (or of the baseline's INSERTs) may bring a checkpoint
    into the next and slow it: the loads of one run are compared with each other.
    """
    conn = await asyncpg.connect(url)
    try:
        for statement in before:
            await conn.execute(statement)
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


def _row(what: str, keys: Load, rows: Load) -> str:
    failed = f" ({keys.failed:,} not 201: {keys.statuses})" if keys.failed else ""
    fewer = f" (on {rows.clients}: max_connections)" if rows.clients else ""
    cpu = f"{keys.cpu_ms:.2f}" if keys.cpu_ms is not None else "–"
    return (
        f"| {what} | {keys.rate:,.0f} keys/s{failed} | {keys.p50:.1f} | {keys.p99:.1f} | {cpu} "
        f"| {rows.rate:,.0f} rows/s{fewer} | {rows.p50:.2f} | {rows.p99:.2f} "
        f"| {keys.rate / rows.rate:.2f} |"
    )


async def main(args: argparse.Namespace) -> None:
    server_url = os.environ.get("KEYLEDGER_TEST_DATABASE_URL")
    nats_url = os.environ.get("KEYLEDGER_TEST_NATS_URL")
    if not server_url or not nats_url or not shutil.which("wrk") or not shutil.which("pgbench"):
        raise SystemExit(
            "needs KEYLEDGER_TEST_DATABASE_URL, KEYLEDGER_TEST_NATS_URL, wrk and pgbench"
        )
    settings = {"max_active_keys_per_org": "10", "event_loop": args.event_loop}
    if args.queue_limit:
        settings["command_queue_limit"] = str(args.queue_limit)
    scratch = tempfile.TemporaryDirectory(prefix="keyledger-")  # the compiled copy's place
    async with migrated_database(server_url, prefix="keyledger_bench") as (url, pool):
        await pool.execute(
            "CREATE TABLE bench_raw (id bigserial PRIMARY KEY, org text, data jsonb)"
        )
        concurrencies = sorted({*args.clients, *([args.replica_clients] if args.replicas else [])})
        free = await free_connections(url)
        raw = {}
        for clients in concurrencies:
            # An empty table and no checkpoint pending, as each GenerateKey load has.
            await _checkpoint(url, "TRUNCATE bench_raw")
            raw[clients] = insert_load(url, clients, args.seconds, free)
    pepper = "bench-" + secrets.token_hex(16)
    builds: dict[str, Path | None] = {"interpreted": None}
    if "compiled" in args.hot_path:
        builds["compiled"] = build_compiled_tree(Path(scratch.name))
    results = {}
    for name in args.hot_path.split(","):

        async def load(replicas: int, clients: int, tree: Path | None = builds[name]) -> Load:
            return await measure_fresh(
                server_url, nats_url, replicas, clients, args.seconds, settings, pepper,
                args.workers, tree,
            )  # fmt: skip

        single = [await load(1, clients) for clients in args.clients]
        spread = [await load(args.replicas, args.replica_clients)] if args.replicas else []
        results[name] = (single, spread)
    scratch.cleanup()
    print(
        "| load | GenerateKey | p50 ms | p99 ms | server CPU ms/key"
        " | raw INSERT | p50 ms | p99 ms | ratio |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    shape = f" ({args.workers} workers)" if args.workers > 1 else ""
    for name, (single, spread) in results.items():
        build = ", compiled" if name == "compiled" else ""
        for clients, keys in zip(args.clients, single, strict=True):
            print(_row(f"1 replica{shape}{build}, {clients} clients", keys, raw[clients]))
        for keys in spread:
            what = f"{args.replicas} replicas{build}, {args.replica_clients} clients in all"
            print(_row(what, keys, raw[args.replica_clients]))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 32, 128])
    parser.add_argument("--replicas", type=int, default=3, help="0: no replica row")
    parser.add_argument("--replica-clients", type=int, default=32)
    parser.add_argument("--queue-limit", type=int, help="KEYLEDGER_COMMAND_QUEUE_LIMIT")
    parser.add_argument("--workers", type=int, default=1, help="serve --workers, per replica")
    parser.add_argument(
        "--hot-path",
        default="interpreted,compiled",
        help="builds to run, comma-separated: interpreted (these sources), compiled (a copy"
        " built by setup.py with KEYLEDGER_COMPILE=1, ≈ 1 min)",
    )
    parser.add_argument(
        "--event-loop",
        default="auto",
        choices=["auto", "asyncio", "uvloop"],
        help="KEYLEDGER_EVENT_LOOP",
    )
    asyncio.run(main(parser.parse_args()))
