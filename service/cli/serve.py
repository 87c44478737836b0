"""``keyledger serve`` and ``keyledger migrate``."""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import os
import re
import socket

from aiohttp import web

from service.cli.command_settings import cli_settings, settings_help
from service.cli.failures import UsageError
from service.cli.workers import READY, die_with_parent, run_workers
from service.event_loop import loop_factory, resolved_loop
from service.garbage_collection import settle_after_start
from service.http.app import create_app
from service.log_config import configure_logging
from service.settings import Settings, SettingsError
from service.store.database import database_connection
from service.store.migrate import migrate

SERVING_LINE = "keyledger serving on"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the API (settings from KEYLEDGER_*)",
        epilog="settings: KEYLEDGER_DATABASE_URL, KEYLEDGER_PEPPER; optional: KEYLEDGER_NATS_URL,"
        " KEYLEDGER_HOST, KEYLEDGER_PORT and the others in README.md's Configuration table."
        " Never read"
        " from a `keyledger dev` folder: serve is for real deployments.",
    )
    serve.add_argument("--host", help="overrides KEYLEDGER_HOST")
    serve.add_argument(
        "--port", type=port_number, help="overrides KEYLEDGER_PORT (0: any free port, printed)"
    )
    serve.add_argument(
        "--workers",
        type=_worker_count,
        default=1,
        help="server processes sharing the port (SO_REUSEPORT), each with its own"
        " verification index; default 1",
    )
    # Set by `--workers N` on the processes it starts: "SUPERVISOR_PID:READY_FD".
    serve.add_argument("--worker-of", help=argparse.SUPPRESS)
    serve.set_defaults(run=run_serve)
    migrate_cmd = commands.add_parser(
        "migrate", help="apply database migrations and exit", epilog=settings_help(["database_url"])
    )
    migrate_cmd.set_defaults(run=run_migrate)


def port_number(text: str) -> int:
    """``--port``'s value: a TCP port 0-65535 (argparse names the flag when it is not)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0-65535, not {text}")
    return port


def _worker_count(text: str) -> int:
    count = int(text) if text.isdigit() else 0
    if not 1 <= count <= 64:
        raise argparse.ArgumentTypeError(f"--workers takes a number from 1 to 64, not {text!r}")
    return count


def run_serve(args: argparse.Namespace) -> int:
    settings = cli_settings(
        ["database_url", "pepper"], from_dev=False, host=args.host, port=args.port
    )
    resolved_loop(settings.event_loop)  # a missing uvloop is a settings error, before binding
    if args.worker_of:
        parent, ready_fd = (int(part) for part in args.worker_of.split(":"))
        die_with_parent(parent)
        configure_logging(
            settings.log_level, access_log_linger=settings.access_log_linger_ms / 1000
        )
        serve_app(settings, ready_fd=ready_fd)
        return 0
    _check_before_start(settings)
    configure_logging(settings.log_level, access_log_linger=settings.access_log_linger_ms / 1000)
    if args.workers > 1:
        return run_workers(settings, args.workers, SERVING_LINE)
    serve_app(settings)
    return 0


def _check_before_start(settings: Settings) -> None:
    """Every problem found before starting, reported together in one line (exit 2)."""
    problems = []
    try:
        settings.pepper_bytes  # noqa: B018 - read for its check
    except SettingsError as exc:
        problems.append(str(exc))
    try:
        require_free_port(settings.host, settings.port)
    except UsageError as exc:
        problems.append(str(exc))
    if problems:
        raise UsageError("; ".join(problems))


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


def serve_app(settings: Settings, on_ready: str | None = None, ready_fd: int | None = None) -> None:
    """Run the API until SIGINT/SIGTERM, then shut down cleanly.

    Once it listens, prints ``on_ready``, by default the one line
    ``keyledger serving on http://HOST:PORT`` (the port bound, with ``--port 0`` too).
    A worker of ``--workers`` (``ready_fd`` given) shares the port with the
    others (SO_REUSEPORT) and reports to its supervisor on that pipe instead.
    """
    try:
        _run(settings, on_ready, ready_fd)
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.EACCES):
            raise
        raise UsageError(
            f"cannot listen on {settings.host}:{settings.port} ({os.strerror(exc.errno)}):"
            " pick another port with --port or KEYLEDGER_PORT"
        ) from None


def _run(settings: Settings, on_ready: str | None, ready_fd: int | None) -> None:
    # The start makes what lives as long as the process (modules, the verification
    # index: a million objects at 1M keys) and little cyclic garbage: collecting
    # meanwhile would walk it all again and again, a third of a snapshot load.
    gc.disable()

    def ready(aiohttp_text: str) -> None:
        # Serving. What the start made is frozen out of the collector (a full
        # collection walking a 1M-key index would hold requests for ≈0.4 s).
        settle_after_start()
        gc.enable()
        if ready_fd is None:
            print(on_ready or _serving_line(aiohttp_text), flush=True)
        else:
            os.write(ready_fd, READY)
            os.close(ready_fd)

    web.run_app(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        print=ready,
        access_log=None,
        reuse_port=ready_fd is not None or None,
        loop=loop_factory(settings.event_loop)(),
        # SIGTERM/SIGINT: stop accepting, give in-flight requests this long, then run the
        # service down in the order documented in service/bootstrap.py.
        shutdown_timeout=settings.shutdown_timeout_seconds,
    )


def _serving_line(aiohttp_text: str) -> str:
    """aiohttp's "======== Running on http://… ========" as keyledger's one line."""
    urls = re.findall(r"https?://[^\s,]+", aiohttp_text)
    return f"{SERVING_LINE} " + (", ".join(urls) if urls else aiohttp_text.strip())


def run_migrate(_: argparse.Namespace) -> int:
    settings = cli_settings(["database_url"])
    configure_logging(settings.log_level)

    async def apply() -> list[str]:
        async with database_connection(settings) as conn:
            return await migrate(conn)

    applied = asyncio.run(apply())
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0
