"""``keyledger events tail``: live events from JetStream, one JSON envelope per line."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO

import nats
import nats.errors
import nats.js.errors
from nats.js.api import DeliverPolicy
from pydantic import ValidationError

from events.codec import envelope_from_json, envelope_to_json
from events.models import EVENT_TYPES
from events.servers import shown_servers
from events.subjects import subject_filter
from service.cli.command_settings import cli_settings, settings_help
from service.cli.failures import UsageError
from service.domain.orgs import is_org_id
from service.settings import Settings

CONNECT_TIMEOUT_SECONDS = 10.0


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    events = commands.add_parser("events", help="the published event stream")
    tasks = events.add_subparsers(dest="task", required=True)
    tail = tasks.add_parser(
        "tail",
        help="print events as they arrive (KEYLEDGER_NATS_URL), one JSON line each",
        epilog=settings_help(["nats_url"], ["nats_stream"]),
    )
    tail.add_argument("--type", choices=sorted(EVENT_TYPES), help="only this event type")
    tail.add_argument("--org", help="only this org")
    tail.add_argument(
        "--from-start", action="store_true", help="replay the whole stream first, then follow"
    )
    tail.add_argument("--max", type=int, metavar="N", help="exit after N events")
    tail.set_defaults(run=run_tail)


def run_tail(args: argparse.Namespace) -> int:
    if args.max is not None and args.max < 1:
        raise UsageError("--max must be at least 1")
    if args.org is not None and not is_org_id(args.org):
        raise UsageError("--org must be an org id (e.g. acme)")
    settings = cli_settings(["nats_url"])
    try:
        asyncio.run(
            tail_events(
                settings,
                event_type=args.type,
                org_id=args.org,
                from_start=args.from_start,
                limit=args.max,
                out=sys.stdout,
            )
        )
    except nats.js.errors.NotFoundError as exc:
        # NATS answers, but keyledger has not published there (yet), or under another name.
        raise UsageError(
            f"no stream {settings.nats_stream!r} at {shown_servers(settings.nats_url or '')}:"
            " has keyledger published there yet? (check KEYLEDGER_NATS_STREAM)"
        ) from exc
    except (nats.errors.Error, OSError, TimeoutError) as exc:
        raise UsageError(
            f"cannot follow stream {settings.nats_stream!r} at"
            f" {shown_servers(settings.nats_url or '')}"
            f" ({type(exc).__name__}{': ' + str(exc) if str(exc) else ''}); is NATS running"
            " there (KEYLEDGER_NATS_URL)?"
        ) from exc
    return 0


async def tail_events(
    settings: Settings,
    *,
    event_type: str | None,
    org_id: str | None,
    from_start: bool,
    limit: int | None,
    out: TextIO,
) -> None:
    """Follow the stream with an ephemeral ordered consumer, printing each envelope."""

    async def quiet(_: Exception) -> None:
        """Connection errors surface once, as the command's exit message."""

    # nats-py retries a refused first connection for ever: bound it, so that a wrong
    # KEYLEDGER_NATS_URL is one line and an exit, not a hang.
    async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
        nc = await nats.connect(
            servers=settings.nats_servers,
            name="keyledger-events-tail",
            connect_timeout=3,
            error_cb=quiet,
        )
    try:
        subscription = await nc.jetstream().subscribe(
            subject_filter(
                org_id=org_id, event_type=event_type, prefix=settings.nats_subject_prefix
            ),
            stream=settings.nats_stream,
            ordered_consumer=True,
            deliver_policy=DeliverPolicy.ALL if from_start else DeliverPolicy.NEW,
            idle_heartbeat=5.0,
        )
        printed = 0
        async for msg in subscription.messages:
            try:
                line = envelope_to_json(envelope_from_json(msg.data))
            except ValidationError:
                print(f"keyledger: skipped a malformed message on {msg.subject}", file=sys.stderr)
                continue
            print(line, file=out, flush=True)
            printed += 1
            if limit is not None and printed >= limit:
                return
    finally:
        await nc.close()
