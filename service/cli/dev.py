"""``keyledger dev``: everything on one machine, nothing installed by hand.

Order matters for a failed start: the folder's lock is taken first (a second
``dev`` on the same folder stops before touching anything), then the API
port and a NATS of your own are checked, then servers a dead dev left
running on the folder are stopped, then the servers start, and only then is
an admin key reused or made, so a start that fails mints nothing.

The servers never outlive dev: Ctrl-C, SIGTERM and SIGHUP (a closed terminal)
stop dev cleanly, the nats-server is in a session of its own (the terminal's
Ctrl-C reaches dev only, which closes its NATS client first) and gets SIGTERM
if dev is killed, and a watchdog (``service.process_ties``) stops the
postmaster, which is no child of dev's, after a ``kill -9``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from pathlib import Path

from events.models import Actor
from service.bootstrap import database
from service.cli import dev_folder
from service.cli.audit import reach_jetstream
from service.cli.failures import UsageError
from service.cli.serve import port_number, require_free_port, serve_app
from service.embedded import EmbeddedNats, EmbeddedPostgres, free_port, port_open
from service.errors import KeyledgerError
from service.log_config import configure_logging
from service.process_ties import Watchdog, stop_process
from service.service_keys import issue_service_key
from service.settings import Settings
from service.store.log_witnesses import refuse_if_truncated
from service.verification.callers import CallerAuthenticator


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = commands.add_parser(
        "dev",
        help="run with embedded PostgreSQL and NATS, print an admin key",
        epilog="settings: none needed. Writes its URLs to <data-dir>/dev.json, where the other"
        " commands find them. KEYLEDGER_DATABASE_URL / KEYLEDGER_NATS_URL, when set, are used"
        " instead of the embedded servers.",
    )
    dev.add_argument("--data-dir", type=Path, help="default ./.keyledger (KEYLEDGER_DATA_DIR)")
    dev.add_argument("--port", type=port_number, help="default 8080 (KEYLEDGER_PORT)")
    dev.set_defaults(run=run_dev)


def run_dev(args: argparse.Namespace) -> int:
    base = Settings.from_env(data_dir=args.data_dir, port=args.port)
    if base.port == 0:
        raise UsageError(
            f"{'--port' if args.port is not None else 'KEYLEDGER_PORT'} 0 is not for keyledger"
            " dev: its banner and dev.json give a fixed URL; pick a port 1-65535"
        )
    data_dir = base.data_dir.resolve()
    base = _without_own_urls(base, data_dir)
    api_url = f"http://{base.host}:{base.port}"
    # A closed terminal (SIGHUP) or a plain `kill` (SIGTERM) stops dev as Ctrl-C does:
    # the servers it started stop with it (while serving, aiohttp handles SIGTERM itself).
    signal.signal(signal.SIGHUP, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with dev_folder.held(data_dir, api_url):
        require_free_port(base.host, base.port)
        # JSON lines on stderr from the first one; the banner alone goes to stdout.
        configure_logging(base.log_level)
        if base.nats_url:
            asyncio.run(_reachable_nats(base))
        _stop_leftovers(data_dir)
        watchdog = Watchdog()
        pids: dict[str, int] = {}
        postgres = nats = None
        try:
            database_url = base.database_url
            if not database_url:
                postgres = EmbeddedPostgres(data_dir / "postgres")
                database_url = postgres.start()
                _watch(watchdog, pids, data_dir, "postgres", postgres.pid, signal.SIGINT)
            nats_url = base.nats_url
            if not nats_url:
                nats = EmbeddedNats(data_dir / "nats", port=_nats_port(data_dir), tied=True)
                nats_url = nats.start()
                dev_folder.remember_nats_port(data_dir, nats.port)
                _watch(watchdog, pids, data_dir, "nats", nats.pid, signal.SIGTERM)
            settings = base.replace(
                database_url=database_url,
                nats_url=nats_url,
                pepper=base.pepper or dev_folder.pepper(data_dir, create=True),
            )
            secret, note = asyncio.run(_admin_key(settings, data_dir))
            dev_folder.write_urls(
                data_dir,
                {
                    "api_url": api_url,
                    "database_url": database_url,
                    "nats_url": nats_url,
                    "nats_stream": settings.nats_stream,
                    "nats_subject_prefix": settings.nats_subject_prefix,
                },
            )
            serve_app(settings, on_ready=banner(settings, secret, note, data_dir))
        finally:
            # The service (and its NATS client) has stopped: now its servers, one
            # failing not keeping the other running.
            for server in (nats, postgres):
                if server is not None:
                    with contextlib.suppress(Exception):
                        server.stop()
            dev_folder.record_servers(data_dir, {})
            watchdog.release()
    return 0


def _watch(
    watchdog: Watchdog,
    pids: dict[str, int],
    data_dir: Path,
    name: str,
    pid: int | None,
    signum: int,
) -> None:
    """Record a started server in the folder and with the watchdog."""
    if pid is None:
        return
    pids[name] = pid
    dev_folder.record_servers(data_dir, pids)
    watchdog.watch(pid, str(data_dir), signum)


def _stop_leftovers(data_dir: Path) -> None:
    """Stop the servers a dev that died left running on this folder (its lock is ours now)."""
    for name, pid in dev_folder.recorded_servers(data_dir).items():
        stop_process(pid, str(data_dir), signal.SIGINT if name == "postgres" else signal.SIGTERM)
    EmbeddedPostgres.stop_leftover(data_dir / "postgres")
    dev_folder.record_servers(data_dir, {})
    (data_dir / dev_folder.URLS).unlink(missing_ok=True)


def _nats_port(data_dir: Path) -> int:
    """The folder's NATS port of last time when free, else 4222 when free, else any."""
    for port in (dev_folder.nats_port(data_dir), 4222):
        if port is not None and not port_open("127.0.0.1", port):
            return port
    return free_port()


def _without_own_urls(settings: Settings, data_dir: Path) -> Settings:
    """Settings without URLs that point at this folder's own embedded servers.

    They are exports pasted from an earlier start of this dev: its servers are
    started again, so they are not "your own server" to use instead.
    """
    changes: dict[str, object] = {}
    if settings.database_url and str(data_dir / "postgres") in settings.database_url:
        changes["database_url"] = None
    own_port = dev_folder.nats_port(data_dir)
    if settings.nats_url and own_port is not None:
        own = {f"nats://{host}:{own_port}" for host in ("127.0.0.1", "localhost")}
        if set(settings.nats_servers) <= own:
            changes["nats_url"] = None
    return settings.replace(**changes) if changes else settings


async def _reachable_nats(settings: Settings) -> None:
    """``UsageError`` in one line (exit 2) when ``KEYLEDGER_NATS_URL`` cannot be reached."""
    async with reach_jetstream(settings):
        pass


async def _admin_key(settings: Settings, data_dir: Path) -> tuple[str, str]:
    """The folder's dev admin key, reused while it works; a new one (kept) otherwise."""
    async with database(settings) as pool:
        await refuse_if_truncated(pool)
        stored = dev_folder.stored_admin_key(data_dir)
        if stored is not None:
            try:
                caller = await CallerAuthenticator(pool, settings.pepper_bytes).authenticate(stored)
                caller.require("admin")
            except KeyledgerError:
                note = "the stored dev admin key no longer works (revoked?): made a new one"
            else:
                return stored, f"kept in {data_dir / dev_folder.ADMIN_KEY}, reused at every start"
        else:
            note = f"new; kept in {data_dir / dev_folder.ADMIN_KEY} and reused at every start"
        issued = await issue_service_key(
            pool,
            settings.pepper_bytes,
            name="dev admin",
            scopes=["admin"],
            actor=Actor(id="cli:dev"),
        )
        dev_folder.store_admin_key(data_dir, issued.secret)
        return issued.secret, note


def banner(settings: Settings, secret: str, note: str, data_dir: Path) -> str:
    """What ``keyledger dev`` prints once it listens: where, the admin key, the exports."""
    base_url = f"http://{settings.host}:{settings.port}"
    return f"""
keyledger dev is running on {base_url}
  console:  {base_url}/console (sign in with the admin service key below)
  data:     {data_dir}
  postgres: {settings.database_url}
  nats:     {settings.nats_url}
  urls:     {data_dir / dev_folder.URLS} (read by the other keyledger commands)

Admin service key ({note}):
{secret}

In another shell, paste these first (keyledger commands run from this folder need none of them):
  export KEYLEDGER_DATABASE_URL='{settings.database_url}'
  export KEYLEDGER_NATS_URL='{settings.nats_url}'
  export KEYLEDGER_NATS_STREAM='{settings.nats_stream}'
  export KEYLEDGER_NATS_SUBJECT_PREFIX='{settings.nats_subject_prefix}'
  export KEYLEDGER_API_URL='{base_url}'
  export KEYLEDGER_ADMIN_KEY={secret}
  export KEYLEDGER_SERVICE_KEY=$KEYLEDGER_ADMIN_KEY  # the key the Python client examples use

Then try:
  curl -s -X POST {base_url}/v1/orgs/acme/keys \\
    -H "Authorization: Bearer $KEYLEDGER_ADMIN_KEY" \\
    -H "Content-Type: application/json" \\
    -d '{{"name": "My first key", "type": "secret", "scopes": ["templates:read"]}}'

Press Ctrl-C to stop.
"""
