"""``keyledger admin create-service-key``."""

from __future__ import annotations

import argparse
import asyncio

from events.models import Actor
from service.bootstrap import database
from service.cli.audit import published_witness
from service.cli.command_settings import cli_settings, settings_help
from service.cli.failures import UsageError
from service.errors import KeyledgerError
from service.service_keys import issue_service_key
from service.store.log_witnesses import refuse_if_truncated

NEEDS = ["database_url", "pepper"]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    admin = commands.add_parser("admin", help="administrative tasks")
    tasks = admin.add_subparsers(dest="task", required=True)
    create = tasks.add_parser(
        "create-service-key",
        help="issue a service key; prints it once",
        epilog=settings_help(NEEDS),
    )
    create.add_argument("--name", required=True)
    create.add_argument(
        "--scopes", required=True, help="comma-separated, e.g. keys:read,keys:write"
    )
    create.add_argument("--orgs", help="comma-separated orgs the key is limited to")
    create.set_defaults(run=run_create_service_key)


def _split(value: str | None) -> list[str] | None:
    return None if value is None else [part.strip() for part in value.split(",") if part.strip()]


def run_create_service_key(args: argparse.Namespace) -> int:
    scopes = _split(args.scopes)
    if not scopes:
        raise UsageError("--scopes needs at least one scope")
    settings = cli_settings(NEEDS)

    async def create() -> str:
        async with database(settings) as pool:
            witness, _ = await published_witness(settings)
            await refuse_if_truncated(pool, [witness] if witness else [])
            issued = await issue_service_key(
                pool,
                settings.pepper_bytes,
                name=args.name,
                scopes=scopes,
                orgs=_split(args.orgs),
                actor=Actor(id="cli:admin"),
            )
            return issued.secret

    try:
        secret = asyncio.run(create())
    except KeyledgerError as exc:
        raise RuntimeError(exc.message) from exc
    print(secret)
    return 0
