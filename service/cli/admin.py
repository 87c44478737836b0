"""``keyledger admin create-service-key`` and ``keyledger admin revoke``."""

from __future__ import annotations

import argparse
import asyncio
import json
import uuid

from events.models import Actor
from events.vocabulary import ENVIRONMENTS, REVOKE_REASONS
from service.bootstrap import database
from service.cli.audit import published_witness
from service.cli.command_settings import cli_settings, settings_help
from service.cli.failures import UsageError
from service.domain.bulk_revocation import (
    MAX_NAMED_KEYS,
    AllKeys,
    CreatedBy,
    KeySelection,
    NamedKeys,
)
from service.domain.ids import is_key_id
from service.domain.orgs import is_org_id
from service.domain.vocabulary import ACTOR_ID
from service.errors import KeyledgerError
from service.key_commands import KeyCommandHandler
from service.key_lifecycle import Issuer, KeyLifecycle
from service.service_keys import issue_service_key
from service.store.log_witnesses import refuse_if_truncated

NEEDS = ["database_url", "pepper"]
REVOKE_NEEDS = ["database_url"]
REVOKE_OPTIONAL = ["nats_url"]
# Refusals the user fixes by changing the command: exit 2, like a bad flag.
_USAGE_REFUSALS = {"validation_error", "key_not_found", "too_many_keys"}


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

    revoke = tasks.add_parser(
        "revoke",
        help="revoke many keys of one org at once, in one transaction; prints the answer",
        description="Revoke every key named, every key one actor generated, or every key of"
        " an org (within one environment if given), in one transaction. Prints"
        ' {"revoked", "already_terminal", "quarantined", "position"} as JSON.',
        epilog=settings_help(REVOKE_NEEDS, REVOKE_OPTIONAL),
    )
    revoke.add_argument("--org", required=True, help="the org whose keys to revoke")
    which = revoke.add_mutually_exclusive_group(required=True)
    which.add_argument("--all", action="store_true", help="every key of the org")
    which.add_argument("--created-by", metavar="ACTOR", help="every key this actor id generated")
    which.add_argument(
        "--key-id",
        metavar="ID",
        nargs="+",
        action="extend",
        help=f"these keys (1-{MAX_NAMED_KEYS}; repeat the flag or list them)",
    )
    revoke.add_argument("--reason", required=True, choices=REVOKE_REASONS)
    revoke.add_argument("--environment", choices=ENVIRONMENTS, help="only keys of this one")
    revoke.set_defaults(run=run_revoke)


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
        raise _refusal(exc) from exc
    print(secret)
    return 0


def _selection(args: argparse.Namespace) -> KeySelection:
    """The keys the flags name; ``UsageError`` for one that cannot be a key or an actor."""
    if args.key_id is not None:
        bad = [n for n, key_id in enumerate(args.key_id, start=1) if not is_key_id(key_id)]
        if bad:
            # Not echoed: a value pasted by mistake may be a secret.
            raise UsageError(f"--key-id: value {bad[0]} is not a key id (key_ + 26-char ULID)")
        if len(args.key_id) > MAX_NAMED_KEYS:
            raise UsageError(f"--key-id: at most {MAX_NAMED_KEYS} keys at a time")
        return NamedKeys(tuple(args.key_id))
    if args.created_by is not None:
        if not ACTOR_ID.matches(args.created_by):
            raise UsageError("--created-by: an actor id is 1-255 printable ASCII characters")
        return CreatedBy(args.created_by)
    return AllKeys()


def run_revoke(args: argparse.Namespace) -> int:
    if not is_org_id(args.org):
        raise UsageError("--org: an org id is 1-63 of a-z, 0-9, _ and -")
    selection = _selection(args)
    settings = cli_settings(REVOKE_NEEDS, REVOKE_OPTIONAL)
    # One request id for every event of this revocation, as over HTTP.
    actor = Actor(id="cli:admin", request_id=f"cli-{uuid.uuid4().hex}")

    async def revoke() -> dict[str, object]:
        async with database(settings) as pool:
            witness, _ = await published_witness(settings)
            await refuse_if_truncated(pool, [witness] if witness else [])
            commands = KeyCommandHandler(
                pool,
                max_active_keys=settings.max_active_keys_per_org,
                lock_timeout_seconds=settings.append_lock_timeout_seconds,
            )
            # A revocation hands out no secret: no pepper is needed.
            keys = KeyLifecycle(commands, pepper=b"")
            outcome = await keys.revoke_many(
                Issuer(args.org, actor), selection, args.reason, args.environment
            )
            return outcome.answer()

    try:
        answer = asyncio.run(revoke())
    except KeyledgerError as exc:
        raise _refusal(exc) from exc
    print(json.dumps(answer))
    return 0


def _refusal(exc: KeyledgerError) -> Exception:
    """The one-line CLI error for a refusal: ``UsageError`` (exit 2) when the flags can fix it."""
    message = exc.message
    if isinstance(exc.details, dict) and exc.details.get("missing"):
        message += ": " + ", ".join(exc.details["missing"])
    elif exc.code == "validation_error" and isinstance(exc.details, list):
        fields = [str(d.get("loc", ["?"])[-1]) for d in exc.details if isinstance(d, dict)]
        message += f" ({', '.join(dict.fromkeys(fields))})" if fields else ""
    if exc.code in _USAGE_REFUSALS:
        return UsageError(message)
    return RuntimeError(message)
