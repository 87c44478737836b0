"""``keyledger dev``: everything on one machine, nothing installed by hand.

Order matters for a failed start: the folder's lock is taken first (a second
``dev`` on the same folder stops before touching anything), then the API
port is checked, then the servers start, and only then is an admin key
reused or made, so a start that fails mints nothing.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from events.models import Actor
from service.bootstrap import database
from service.cli import dev_folder
from service.cli.serve import require_free_port, serve_app
from service.embedded import EmbeddedNats, EmbeddedPostgres, free_port, port_open
from service.errors import KeyledgerError
from service.log_config import configure_logging
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
    dev.add_argument("--port", type=int, help="default 8080 (KEYLEDGER_PORT)")
    dev.set_defaults(run=run_dev)


def run_dev(args: argparse.Namespace) -> int:
    base = Settings.from_env(data_dir=args.data_dir, port=args.port)
    data_dir = base.data_dir.resolve()
    api_url = f"http://{base.host}:{base.port}"
    with dev_folder.held(data_dir, api_url):
        require_free_port(base.host, base.port)
        # JSON lines on stderr from the first one; the banner alone goes to stdout.
        configure_logging(base.log_level)
        postgres = nats = None
        try:
            database_url = base.database_url
            if not database_url:
                postgres = EmbeddedPostgres(data_dir / "postgres")
                database_url = postgres.start()
            nats_url = base.nats_url
            if not nats_url:
                port = 4222 if not port_open("127.0.0.1", 4222) else free_port()
                nats = EmbeddedNats(data_dir / "nats", port=port)
                nats_url = nats.start()
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
            if nats is not None:
                nats.stop()
            if postgres is not None:
                postgres.stop()
    return 0


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

Then try:
  curl -s -X POST {base_url}/v1/orgs/acme/keys \\
    -H "Authorization: Bearer $KEYLEDGER_ADMIN_KEY" \\
    -H "Content-Type: application/json" \\
    -d '{{"name": "My first key", "type": "secret", "scopes": ["templates:read"]}}'

Press Ctrl-C to stop.
"""
