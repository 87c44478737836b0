"""Issuing service keys (keys of the ``_system`` org) outside of HTTP: CLI, dev, tests.

The rules a service key follows are ``key_lifecycle.service_key_problem``,
checked by the same ``generate`` use case that ``POST /v1/orgs/_system/keys``
runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg
from pydantic import TypeAdapter, ValidationError

from events.models import Actor
from service.domain.orgs import SYSTEM_ORG
from service.domain.vocabulary import Name
from service.errors import KeyledgerError
from service.key_commands import KeyCommandHandler
from service.key_lifecycle import Issuer, KeyLifecycle, NewKey

_NAME = TypeAdapter(Name)


@dataclass(frozen=True, slots=True)
class IssuedServiceKey:
    key_id: str
    secret: str
    # The log position of its KeyGenerated: replicas accept the key once their index has it.
    position: int


def new_service_key(name: str, scopes: list[str], orgs: list[str] | None = None) -> NewKey:
    """A service key named ``name`` with ``scopes``, limited to ``orgs`` when given."""
    try:
        _NAME.validate_python(name)
    except ValidationError as exc:
        raise KeyledgerError(
            "validation_error", "name must be 1-100 characters, without control characters"
        ) from exc
    return NewKey(
        name=name,
        type="secret",
        scopes=tuple(scopes),
        metadata={"orgs": orgs} if orgs is not None else {},
    )


async def issue_service_key(
    pool: asyncpg.Pool,
    pepper: bytes,
    *,
    name: str,
    scopes: list[str],
    orgs: list[str] | None = None,
    actor: Actor,
) -> IssuedServiceKey:
    """Generate a service key on ``pool``; its secret is returned here and nowhere else.

    For a process without a running service (CLI, tests writing behind the
    app's back); a running service issues through ``Keyledger.keys``.
    """
    keys = KeyLifecycle(KeyCommandHandler(pool, max_active_keys=0), pepper)
    issued = await keys.generate(Issuer(SYSTEM_ORG, actor), new_service_key(name, scopes, orgs))
    secret, state = issued.handed_out["secret"], issued.outcome.state
    assert secret is not None and state is not None  # no idempotency key: never a replay
    return IssuedServiceKey(state.key_id, secret, state.position)
