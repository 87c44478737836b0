"""``keyledger projections rebuild [NAME]``."""

from __future__ import annotations

import argparse
import asyncio

from projections.catalog import all_projections, projection_named
from projections.rebuild import RebuildRefused, RebuildReport, rebuild
from service.bootstrap import database
from service.cli.command_settings import cli_settings, settings_help
from service.log_config import configure_logging
from service.store.registry_snapshot import SnapshotStore


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = commands.add_parser("projections", help="read models built from the event log")
    tasks = group.add_subparsers(dest="task", required=True)
    rebuild_cmd = tasks.add_parser(
        "rebuild",
        help="rebuild from the first event into a fresh table and swap it in (service may run)",
    )
    rebuild_cmd.add_argument(
        "name", nargs="?", help="the projection (default: all); e.g. key_views"
    )
    rebuild_cmd.add_argument(
        "--batch-size", type=int, default=5000, help="events per read (default 5000)"
    )
    rebuild_cmd.add_argument(
        "--from-snapshot",
        action="store_true",
        help="start from the newest registry snapshot that checks out and fold only the log"
        " after it (needs KEYLEDGER_PEPPER, which seals snapshots)",
    )
    rebuild_cmd.epilog = settings_help(["database_url"])
    rebuild_cmd.set_defaults(run=run_rebuild)


def run_rebuild(args: argparse.Namespace) -> int:
    settings = cli_settings(["database_url", "pepper"] if args.from_snapshot else ["database_url"])
    configure_logging(settings.log_level)
    snapshots = SnapshotStore(settings.pepper_bytes) if args.from_snapshot else None
    try:
        chosen = [projection_named(args.name)] if args.name else all_projections()
    except KeyError as exc:
        raise RuntimeError(exc.args[0]) from exc
    if args.batch_size < 1:
        raise RuntimeError("--batch-size must be at least 1")

    async def rebuild_all() -> list[RebuildReport]:
        async with database(settings, bounded=False) as pool:
            return [
                await rebuild(pool, projection, batch_size=args.batch_size, snapshots=snapshots)
                for projection in chosen
                if projection.table is not None
            ]

    try:
        reports = asyncio.run(rebuild_all())
    except RebuildRefused as exc:
        raise RuntimeError(str(exc)) from exc
    for report in reports:
        print(
            f"{report.name}: rebuilt up to position {report.position}"
            + (
                f" from the snapshot at {report.started_from}"
                if report.started_from is not None
                else ""
            )
            + f" in"
            f" {report.seconds:.2f}s ({report.events_per_second:,.0f} events/s)"
            + (f"; {report.quarantined} key(s) quarantined" if report.quarantined else "")
        )
    return 0
