"""Issuing service keys (keys of the ``_system`` org) outside of HTTP: CLI and dev."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from events.models import Actor
from service.clock import utc_now
from service.domain import key_material
from service.domain.commands import GenerateKey
from service.domain.ids import new_key_id
from service.domain.orgs import SYSTEM_ORG, is_tenant_org
from service.domain.vocabulary import text_problem
from service.errors import KeyledgerError
from service.key_commands import KeyCommandHandler
from service.verification.callers import SERVICE_SCOPES


@dataclass(frozen=True, slots=True)
class IssuedServiceKey:
    key_id: str
    secret: str
    # The log position of its KeyGenerated: replicas accept the key once their index has it.
    position: int


async def issue_service_key(
    pool: asyncpg.Pool,
    pepper: bytes,
    *,
    name: str,
    scopes: list[str],
    orgs: list[str] | None = None,
    actor: Actor,
) -> IssuedServiceKey:
    """Generate a service key; its secret is returned here and nowhere else."""
    unknown = sorted(set(scopes) - set(SERVICE_SCOPES))
    if unknown or not scopes:
        raise KeyledgerError(
            "validation_error", f"scopes must be among {', '.join(SERVICE_SCOPES)}"
        )
    if orgs is not None and not all(is_tenant_org(o) for o in orgs):
        raise KeyledgerError("validation_error", "orgs must be org ids")
    if not 1 <= len(name) <= 100 or not name.strip() or text_problem(name):
        raise KeyledgerError(
            "validation_error", "name must be 1-100 characters, without control characters"
        )
    secret = key_material.new_secret("secret", "live")
    command = GenerateKey(
        key_id=new_key_id(),
        org_id=SYSTEM_ORG,
        name=name,
        type="secret",
        environment="live",
        issued_at=utc_now(),
        scopes=tuple(dict.fromkeys(scopes)),
        secret_hash=key_material.secret_hash(pepper, secret),
        hint=key_material.hint(secret),
        metadata={"orgs": orgs} if orgs is not None else {},
    )
    handler = KeyCommandHandler(pool, max_active_keys=0)
    outcome = await handler.handle(command, org_id=SYSTEM_ORG, actor=actor)
    return IssuedServiceKey(
        key_id=outcome.body["key"]["id"], secret=secret, position=outcome.body["position"]
    )
