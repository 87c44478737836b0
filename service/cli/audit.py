"""``keyledger audit verify``: walk the hash chain; exit 1 when it is broken."""

from __future__ import annotations

import argparse
import asyncio
import json

import asyncpg

from service.settings import Settings
from service.store.audit_chain import ChainReport, verify_chain
from service.store.migrate import migrate


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("audit", help="the tamper-evident event log")
    tasks = group.add_subparsers(dest="task", required=True)
    verify = tasks.add_parser(
        "verify", help="recompute every event's hash; prints JSON, exits 1 when broken"
    )
    verify.set_defaults(run=run_verify)


def run_verify(_: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if not settings.database_url:
        raise RuntimeError("KEYLEDGER_DATABASE_URL is not set")

    async def walk() -> ChainReport:
        conn = await asyncpg.connect(settings.database_url)
        try:
            await migrate(conn)
            return await verify_chain(conn)
        finally:
            await conn.close()

    report = asyncio.run(walk())
    print(json.dumps(report.as_json()))
    return 0 if report.ok else 1
