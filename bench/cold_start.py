"""Cold start at 1M keys: a new replica's time to ``/readyz`` 200 and its RSS, with and
without a registry snapshot (``python -m bench.cold_start``).

In a scratch database it writes a hash-chained log of N keys and 3N events
(each key generated, then two of rename, disable/enable, rotate, revoke) by
COPY: the canonical JSON of each event is put together from templates made by
the real codec, and the hashes are chained as ``events.codec.seal`` does (a
prefix of the chain is re-checked with the audit's own code, the whole chain
with ``--verify-chain``). Then it times the snapshot writer over the whole log
and a ``key_views`` rebuild from that snapshot, and starts ``keyledger serve``
twice, from the snapshot and from the log alone, each time measuring from the
process start until ``/readyz`` answers 200, the process's RSS then, and
checking sample keys (VALID, REVOKED) over HTTP. Last, the index's live bytes
per key as loaded from the snapshot (tracemalloc).

The server comes from ``KEYLEDGER_BENCH_DATABASE_URL`` or
``KEYLEDGER_TEST_DATABASE_URL``, else an embedded PostgreSQL is started.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.rebuild import _server_url
from bench.snapshot_load import LoopLag, index_bytes_per_key
from bench.support import scratch_database
from events.codec import GENESIS_HASH, canonical_json, chain_hash
from events.models import (
    Actor,
    KeyDisabled,
    KeyEnabled,
    KeyGenerated,
    KeyRenamed,
    KeyRevoked,
    KeyRotated,
)
from projections.key_views import KeyViews
from projections.rebuild import rebuild
from service.domain import key_material
from service.domain.ids import new_key_id
from service.embedded import free_port
from service.service_keys import issue_service_key
from service.snapshot_writer import SnapshotWriter
from service.store.audit_chain import verify_chain
from service.store.event_rows import stored_body
from service.store.migrate import migrate
from service.store.registry_snapshot import SnapshotStore

ACTOR_JSON = canonical_json(Actor(id="bench").model_dump(mode="json"))
START = datetime(2025, 1, 1, tzinfo=UTC)
_COLUMNS = [
    "position",
    "event_id",
    "event_type",
    "schema_version",
    "org_id",
    "key_id",
    "stream_version",
    "occurred_at",
    "actor",
    "data",
    "hash",
]
# Key stories by number % 4: the two events after KeyGenerated, and the verdict at the end.
STORIES = [("rename", "rename"), ("disable", "enable"), ("rotate", "rename"), ("rename", "revoke")]
EXPECTED = ["VALID", "VALID", "VALID", "REVOKED"]


def _template(event: Any) -> str:
    """The event's canonical ``data``, with ``@NAME@``/``@HASH@``/``@AT@`` placeholders."""
    return canonical_json(event.data())


def _templates() -> dict[str, tuple[str, str]]:
    base: dict[str, Any] = {"key_id": "k", "org_id": "o", "occurred_at": START}
    events: dict[str, Any] = {
        "generate": KeyGenerated(
            **base,
            name="@NAME@",
            type="secret",
            environment="live",
            scopes=("orders:*",),
            secret_hash="@HASH@",
            hint="sk_live_AAAA...ZZZZ",
        ),
        "rename": KeyRenamed(**base, name="@NAME@", previous_name="bench"),
        "disable": KeyDisabled(**base, reason="pause"),
        "enable": KeyEnabled(**base),
        "revoke": KeyRevoked(**base, reason="compromised"),
        "rotate": KeyRotated(
            **base,
            secret_hash="@HASH@",
            hint="sk_live_BBBB...YYYY",
            previous_valid_until=datetime(2025, 1, 2, tzinfo=UTC),
        ),
    }
    return {kind: (event.event_type, _template(event)) for kind, event in events.items()}


class Samples:
    """Keys whose secrets are known, and the verdict each must get."""

    def __init__(self) -> None:
        self.secrets: list[tuple[str, str]] = []


def _copy_lines(keys: int, pepper: bytes, samples: Samples, every: int) -> Iterator[bytes]:
    """The log as COPY text lines, in blocks of 1000 keys (their events interleaved)."""
    templates = _templates()
    previous = GENESIS_HASH
    position = 0
    block: list[bytes] = []
    for first in range(0, keys, 1000):
        ids = [new_key_id() for _ in range(first, min(first + 1000, keys))]
        hashes = [secrets.token_hex(32) for _ in ids]
        rotated = [secrets.token_hex(32) for _ in ids]
        for offset in range(len(ids)):
            number = first + offset
            if number % every == 0:
                secret = key_material.new_secret("secret", "live")
                digest = key_material.secret_hash(pepper, secret)
                if STORIES[number % 4][0] == "rotate":
                    rotated[offset] = digest
                else:
                    hashes[offset] = digest
                samples.secrets.append((secret, EXPECTED[number % 4]))
        for step in range(3):
            for offset, key_id in enumerate(ids):
                number = first + offset
                kind = "generate" if step == 0 else STORIES[number % 4][step - 1]
                event_type, data = templates[kind]
                secret_hash = hashes[offset] if kind == "generate" else rotated[offset]
                data = data.replace("@NAME@", f"bench key {number}.{step}").replace(
                    "@HASH@", secret_hash
                )
                position += 1
                org = f"org-{number % 1000}"
                at = START + timedelta(seconds=number, milliseconds=step)
                stamp = at.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                event_id = f"00000000-0000-4000-8000-{position:012x}"
                body = (
                    f'{{"actor":{ACTOR_JSON},"data":{data},"event_id":"{event_id}",'
                    f'"event_type":"{event_type}","key_id":"{key_id}","occurred_at":"{stamp}",'
                    f'"org_id":"{org}","position":{position},"schema_version":1,'
                    f'"stream_version":{step + 1}}}'
                )
                previous = hashlib.sha256((previous + body).encode()).hexdigest()
                block.append(
                    f"{position}\t{event_id}\t{event_type}\t1\t{org}\t{key_id}\t{step + 1}\t"
                    f"{stamp}\t{ACTOR_JSON}\t{data}\t{previous}\n".encode()
                )
        if len(block) >= 30_000:
            yield b"".join(block)
            block = []
    if block:
        yield b"".join(block)


async def _lines_async(lines: Iterator[bytes]) -> AsyncIterator[bytes]:
    for block in lines:
        yield block


async def _check_prefix(conn: asyncpg.Connection, count: int) -> None:
    """Re-check the first ``count`` hashes as the audit computes them (``stored_body``)."""
    rows = await conn.fetch(
        """SELECT position, event_id::text AS event_id, event_type, schema_version, org_id,
                  key_id, stream_version,
                  to_char(occurred_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')
                      AS occurred_at, actor, data, hash
           FROM events ORDER BY position LIMIT $1""",
        count,
    )
    previous = GENESIS_HASH
    for row in rows:
        if chain_hash(previous, stored_body(row)) != row["hash"]:
            raise RuntimeError(f"the benchmark log does not chain at {row['position']}")
        previous = row["hash"]


async def _serve_until_ready(
    url: str, pepper: str, load_snapshot: bool, samples: Samples, admin: str
) -> dict[str, float]:
    """Start ``keyledger serve``; seconds to /readyz 200, RSS then, sample verdicts."""
    port = free_port()
    env = {
        **os.environ,
        "KEYLEDGER_DATABASE_URL": url,
        "KEYLEDGER_PEPPER": pepper,
        "KEYLEDGER_PORT": str(port),
        "KEYLEDGER_HOST": "127.0.0.1",
        "KEYLEDGER_NATS_URL": "",
        "KEYLEDGER_LOG_LEVEL": "warning",
        "KEYLEDGER_SNAPSHOT_INTERVAL_SECONDS": "0",
        "KEYLEDGER_SNAPSHOT_LOAD": "true" if load_snapshot else "false",
    }
    executable = Path(sys.executable).parent / "keyledger"
    started = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        str(executable), "serve", env=env, stdout=asyncio.subprocess.DEVNULL
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"keyledger serve exited with {process.returncode}")
                try:
                    async with http.get(f"{base}/readyz") as response:
                        if response.status == 200:
                            break
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.02)
            ready = time.perf_counter() - started
            rss = _rss_bytes(process.pid)
            cpu = _cpu_seconds(process.pid)
            right = 0
            auth = {"Authorization": f"Bearer {admin}"}
            for secret, expected in samples.secrets:
                async with http.post(
                    f"{base}/v1/verify", json={"key": secret}, headers=auth
                ) as response:
                    right += (await response.json())["code"] == expected
    finally:
        process.terminate()
        await process.wait()
    return {
        "ready_s": ready,
        "cpu_s": cpu,
        "rss": rss,
        "right": right,
        "samples": len(samples.secrets),
    }


def _cpu_seconds(pid: int) -> float:
    """The process's CPU time so far (user and system): what it took to get ready,
    whatever else the machine was doing meanwhile."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _rss_bytes(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024.0
    return float("nan")


async def _index_bytes_per_key(pool: asyncpg.Pool, pepper: bytes) -> tuple[int, float]:
    """Live bytes per key of an index loaded from the newest snapshot (tracemalloc)."""
    store = SnapshotStore(pepper)
    async with pool.acquire() as conn:
        [header] = await store.newest(conn, 1)
        return header.keys, await index_bytes_per_key(conn, store, header)


async def run(
    server_url: str, keys: int, verify_whole_chain: bool, skip_log_only: bool
) -> list[str]:
    """Every measurement, in a scratch database dropped afterwards."""
    pepper = "bench-" + secrets.token_hex(16)
    samples = Samples()
    out: list[str] = []
    async with scratch_database(server_url, prefix="keyledger_bench") as url:
        conn = await asyncpg.connect(url)
        await migrate(conn)
        started = time.perf_counter()
        await conn.copy_to_table(
            "events",
            source=_lines_async(_copy_lines(keys, pepper.encode(), samples, max(1, keys // 200))),
            columns=_COLUMNS,
            format="text",
        )
        await conn.execute("ANALYZE events")
        head = await conn.fetchval("SELECT max(position) FROM events")
        out.append(
            f"log: {keys:,} keys, {head:,} events, written by COPY in "
            f"{time.perf_counter() - started:.1f} s"
        )
        await _check_prefix(conn, min(head, 30_000))
        if verify_whole_chain:
            chain = await verify_chain(conn)
            if not chain.ok:
                raise RuntimeError(f"the benchmark log is not a valid chain: {chain}")
        await conn.close()

        async with asyncpg.create_pool(url, min_size=1, max_size=3) as pool:
            writer = SnapshotWriter(
                pool, pepper.encode(), interval_seconds=1, events_per_snapshot=1_000_000
            )
            started = time.perf_counter()
            with LoopLag() as lag:
                header = await writer.write_once()
            assert header is not None and header.position == head
            out.append(
                f"snapshot of the whole log written in {time.perf_counter() - started:.1f} s "
                f"({header.keys:,} keys); longest event loop stall meanwhile "
                f"{lag.worst_cpu * 1000:.0f} ms CPU ({lag.worst * 1000:.0f} ms wall)"
            )
            started = time.perf_counter()
            await rebuild(pool, KeyViews(), snapshots=SnapshotStore(pepper.encode()))
            out.append(
                f"key_views rebuilt from the snapshot in {time.perf_counter() - started:.1f} s"
            )
            admin = await issue_service_key(
                pool, pepper.encode(), name="bench", scopes=["admin"], actor=Actor(id="bench")
            )
            keys_loaded, per_key = await _index_bytes_per_key(pool, pepper.encode())
        out += [
            "",
            "| replica start | to /readyz 200 | its CPU until then | RSS at ready |"
            " sample verdicts right |",
            "|---|---:|---:|---:|---:|",
        ]
        runs = [("from the snapshot", True)] + ([] if skip_log_only else [("whole log", False)])
        for label, load in runs:
            result = await _serve_until_ready(url, pepper, load, samples, admin.secret)
            out.append(
                f"| {label} | {result['ready_s']:.2f} s | {result['cpu_s']:.2f} s |"
                f" {result['rss'] / 2**20:.0f} MiB | {result['right']}/{result['samples']} |"
            )
        out += [
            "",
            f"index loaded from the snapshot: {keys_loaded:,} keys, "
            f"{per_key:.0f} live bytes per key (tracemalloc)",
        ]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--verify-chain", action="store_true", help="walk the whole chain")
    parser.add_argument("--skip-log-only", action="store_true", help="only start from a snapshot")
    parser.add_argument("--server-url", help="a PostgreSQL server (a scratch db is made there)")
    args = parser.parse_args()
    url, server = _server_url(args.server_url)
    try:
        lines = asyncio.run(run(url, args.keys, args.verify_chain, args.skip_log_only))
    finally:
        if server is not None:
            server.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
