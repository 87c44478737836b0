"""``keyledger serve`` and ``keyledger migrate``."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import re
import socket

from aiohttp import web

from service.cli.command_settings import cli_settings, settings_help
from service.cli.failures import UsageError
from service.http.app import create_app
from service.log_config import configure_logging
from service.settings import Settings
from service.store.database import database_connection
from service.store.migrate import migrate


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the API (settings from KEYLEDGER_*)",
        epilog="settings: KEYLEDGER_DATABASE_URL, KEYLEDGER_PEPPER; optional: KEYLEDGER_NATS_URL,"
        " KEYLEDGER_HOST, KEYLEDGER_PORT and the others in docs/architecture.md. Never read"
        " from a `keyledger dev` folder: serve is for real deployments.",
    )
    serve.add_argument("--host", help="overrides KEYLEDGER_HOST")
    serve.add_argument("--port", type=int, help="overrides KEYLEDGER_PORT")
    serve.set_defaults(run=run_serve)
    migrate_cmd = commands.add_parser(
        "migrate", help="apply database migrations and exit", epilog=settings_help(["database_url"])
    )
    migrate_cmd.set_defaults(run=run_migrate)


def run_serve(args: argparse.Namespace) -> int:
    settings = cli_settings(
        ["database_url", "pepper"], from_dev=False, host=args.host, port=args.port
    )
    require_free_port(settings.host, settings.port)
    configure_logging(settings.log_level)
    serve_app(settings)
    return 0


def require_free_port(host: str, port: int) -> None:
    """``UsageError`` naming the setting when ``host:port`` cannot be listened on."""
    if port == 0:
        return
    with socket.socket() as sock:
        # As the server will (aiohttp sets it): closed connections in TIME_WAIT do not count.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise UsageError(
                f"cannot listen on {host}:{port} ({os.strerror(exc.errno or 0)}): pick another"
                " port with --port or KEYLEDGER_PORT"
            ) from None


def serve_app(settings: Settings, on_ready: str | None = None) -> None:
    """Run the API until SIGINT/SIGTERM, then shut down cleanly.

    Once it listens, prints ``on_ready``, by default the one line
    ``keyledger serving on http://HOST:PORT`` (the port bound, with ``--port 0`` too).
    """
    try:
        _run(settings, on_ready)
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        raise UsageError(
            f"cannot listen on {settings.host}:{settings.port} ({os.strerror(exc.errno)}):"
            " pick another port with --port or KEYLEDGER_PORT"
        ) from None


def _run(settings: Settings, on_ready: str | None) -> None:
    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=lambda text: print(on_ready or _serving_line(text), flush=True),
        access_log=None,
        # SIGTERM/SIGINT: stop accepting, give in-flight requests this long, then run the
        # service down in the order documented in service/bootstrap.py.
        shutdown_timeout=settings.shutdown_timeout_seconds,
    )


def _serving_line(aiohttp_text: str) -> str:
    """aiohttp's "======== Running on http://… ========" as keyledger's one line."""
    urls = re.findall(r"https?://[^\s,]+", aiohttp_text)
    return "keyledger serving on " + (", ".join(urls) if urls else aiohttp_text.strip())


def run_migrate(_: argparse.Namespace) -> int:
    settings = cli_settings(["database_url"])
    configure_logging(settings.log_level)

    async def apply() -> list[str]:
        async with database_connection(settings) as conn:
            return await migrate(conn)

    applied = asyncio.run(apply())
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0
