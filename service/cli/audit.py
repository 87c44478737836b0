"""``keyledger audit verify`` and ``keyledger audit repair`` (docs/security.md §6).

``verify`` walks the hash chain and compares the log head with its witnesses
(JetStream's last published event when ``KEYLEDGER_NATS_URL`` is set, the
outbox and projection checkpoints); it prints one JSON document and exits 1
when the chain is broken or the log is truncated. ``repair`` re-appends a
truncated log's lost tail from JetStream, refusing anything that does not
continue the chain.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import nats
from nats.js import JetStreamContext

from events.servers import shown_servers
from service.cli.command_settings import cli_settings, settings_help
from service.cli.failures import UsageError
from service.settings import Settings
from service.store.audit_chain import verify_chain
from service.store.database import database_connection
from service.store.log_repair import RepairRefused, repair_log
from service.store.log_witnesses import Witness, audit_json, jetstream_witness, read_witness_report
from service.store.migrate import migrate

NATS_TIMEOUT_SECONDS = 5.0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("audit", help="the tamper-evident event log")
    tasks = group.add_subparsers(dest="task", required=True)
    verify = tasks.add_parser(
        "verify",
        help="recompute every event's hash and compare the head with its witnesses;"
        " prints JSON, exits 1 when broken or truncated",
    )
    verify.epilog = settings_help(["database_url"], ["nats_url"])
    verify.set_defaults(run=run_verify)
    repair = tasks.add_parser(
        "repair",
        help="re-append the events a truncated log lost, from JetStream, when they continue"
        " the hash chain",
    )
    repair.epilog = settings_help(["database_url", "nats_url"])
    repair.set_defaults(run=run_repair)


@contextlib.asynccontextmanager
async def reach_jetstream(settings: Settings) -> AsyncIterator[JetStreamContext]:
    """JetStream at ``settings.nats_url``; ``UsageError`` in one line when NATS is not there."""
    if not settings.nats_url:
        raise RuntimeError("KEYLEDGER_NATS_URL is not set: repair reads the lost events from it")

    async def quiet(_: Exception) -> None:
        return None

    try:
        # One attempt per server (nats-py loops forever on the first connect with
        # max_reconnect_attempts=0), and a bound on the whole, whatever the client does.
        async with asyncio.timeout(NATS_TIMEOUT_SECONDS * 2):
            nc = await nats.connect(
                servers=settings.nats_servers,
                allow_reconnect=False,
                max_reconnect_attempts=1,
                connect_timeout=NATS_TIMEOUT_SECONDS,
                error_cb=quiet,
            )
    except Exception as exc:
        raise UsageError(
            f"cannot reach NATS at {shown_servers(settings.nats_url)} ({type(exc).__name__}):"
            " check KEYLEDGER_NATS_URL"
        ) from exc
    try:
        yield nc.jetstream(timeout=NATS_TIMEOUT_SECONDS)
    finally:
        await nc.close()


async def published_witness(settings: Settings) -> tuple[Witness | None, str | None]:
    """JetStream's witness, or why it could not be read (which does not fail verify)."""
    if not settings.nats_url:
        return None, None
    try:
        async with reach_jetstream(settings) as js:
            return await jetstream_witness(js, settings.nats_stream), None
    except Exception as exc:
        return None, f"jetstream: {exc}"


def run_verify(_: argparse.Namespace) -> int:
    settings = cli_settings(["database_url"], ["nats_url"])

    async def walk() -> dict[str, Any]:
        async with database_connection(settings) as conn:
            await migrate(conn)
            chain = await verify_chain(conn)
            # JetStream is read before the head (inside read_witness_report): an event
            # committed meanwhile makes the head further along, never a false alarm.
            witness, problem = await published_witness(settings)
            report = await read_witness_report(
                conn, [witness] if witness else [], [problem] if problem else []
            )
            return audit_json(chain, report)

    body = asyncio.run(walk())
    print(json.dumps(body))
    return 0 if body["ok"] else 1


def run_repair(_: argparse.Namespace) -> int:
    settings = cli_settings(["database_url", "nats_url"])

    async def repair() -> dict[str, int]:
        async with database_connection(settings) as conn:
            await migrate(conn)
            async with reach_jetstream(settings) as js:
                return (await repair_log(conn, js, settings.nats_stream)).as_json()

    try:
        body = asyncio.run(repair())
    except RepairRefused as exc:
        raise RuntimeError(f"audit repair refused: {exc}") from exc
    print(json.dumps(body))
    return 0
