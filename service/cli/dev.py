"""``keyledger dev``: everything on one machine, nothing installed by hand."""

from __future__ import annotations

import argparse
import asyncio
import secrets
from pathlib import Path

from events.models import Actor
from service.bootstrap import database
from service.cli.serve import serve_app
from service.embedded import EmbeddedNats, EmbeddedPostgres, free_port, port_open
from service.log_config import configure_logging
from service.service_keys import issue_service_key
from service.settings import Settings
from service.store.log_witnesses import refuse_if_truncated


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dev = commands.add_parser(
        "dev", help="run with embedded PostgreSQL and NATS, print an admin key"
    )
    dev.add_argument("--data-dir", type=Path, help="default ./.keyledger (KEYLEDGER_DATA_DIR)")
    dev.add_argument("--port", type=int, help="default 8080 (KEYLEDGER_PORT)")
    dev.set_defaults(run=run_dev)


def _pepper(data_dir: Path) -> str:
    """The dev pepper, made once and kept: the stored hashes depend on it."""
    path = data_dir / "pepper"
    if not path.exists():
        path.write_text(secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()


def run_dev(args: argparse.Namespace) -> int:
    base = Settings.from_env(data_dir=args.data_dir, port=args.port)
    data_dir = base.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(base.log_level)
    postgres = nats = None
    try:
        database_url = base.database_url
        if not database_url:
            postgres = EmbeddedPostgres(data_dir / "postgres")
            database_url = postgres.start()
        nats_url = base.nats_url
        if not nats_url:
            nats = EmbeddedNats(
                data_dir / "nats", port=4222 if not port_open("127.0.0.1", 4222) else free_port()
            )
            nats_url = nats.start()
        settings = base.replace(
            database_url=database_url,
            nats_url=nats_url,
            pepper=base.pepper or _pepper(data_dir),
        )
        secret = asyncio.run(_admin_key(settings))
        serve_app(settings, on_ready=_banner(settings, secret, data_dir))
    finally:
        if nats is not None:
            nats.stop()
        if postgres is not None:
            postgres.stop()
    return 0


async def _admin_key(settings: Settings) -> str:
    async with database(settings) as pool:
        await refuse_if_truncated(pool)
        issued = await issue_service_key(
            pool,
            settings.pepper_bytes,
            name="dev admin",
            scopes=["admin"],
            actor=Actor(id="cli:dev"),
        )
        return issued.secret


def _banner(settings: Settings, secret: str, data_dir: Path) -> str:
    base_url = f"http://{settings.host}:{settings.port}"
    return f"""
keyledger dev is running on {base_url}
  data:     {data_dir}
  postgres: {settings.database_url}
  nats:     {settings.nats_url}

Admin service key (shown once; a new one is made at every start):
{secret}

Try it:
  export KEYLEDGER_ADMIN_KEY={secret}
  curl -s -X POST {base_url}/v1/orgs/acme/keys \\
    -H "Authorization: Bearer $KEYLEDGER_ADMIN_KEY" \\
    -H "Content-Type: application/json" \\
    -d '{{"name": "My first key", "type": "secret", "scopes": ["templates:read"]}}'

Press Ctrl-C to stop.
"""
