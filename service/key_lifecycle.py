"""The key use cases: generate, rename, change, disable, enable, revoke and rotate a key.

Each takes plain values (who asks, on which org, what they ask for) and
returns what happened in domain terms (``CommandOutcome``: state, events,
``created``, ``replayed``), plus the secret or private key a new key hands out
once. HTTP, the CLI, benchmarks and tests call them alike; only HTTP knows
about bodies and status codes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from events.models import Actor, Credits, NamedRateLimit, RateLimit
from events.vocabulary import Algorithm, Environment, ExpiresIn, KeyType, RevokeReason
from service.clock import utc_now
from service.command_session import CommandOutcome, IdempotentRequest
from service.domain import key_material
from service.domain.bulk_revocation import KeySelection, RevokeKeys
from service.domain.commands import (
    Command,
    DisableKey,
    EnableKey,
    GenerateKey,
    RenameKey,
    RevokeKey,
    RotateKey,
    UpdateKey,
)
from service.domain.durations import expiry_from, parse_grace_period
from service.domain.ids import new_key_id
from service.domain.orgs import SYSTEM_ORG, is_tenant_org
from service.domain.state import KeyState
from service.errors import KeyledgerError
from service.revocation_session import RevocationOutcome, RevocationRequest
from service.verification.callers import SERVICE_SCOPES, Caller

DEFAULT_ALGORITHM: Algorithm = "ed25519"


@dataclass(frozen=True, slots=True)
class Issuer:
    """Who makes a command, on which org, and under which conditions."""

    org_id: str
    actor: Actor
    # The service key making the command, re-checked when it commits (None: CLI, sweeper).
    caller: Caller | None = None
    # The key version the issuer last saw (``If-Match``).
    if_match: int | None = None
    idempotent: IdempotentRequest | None = None


@dataclass(frozen=True, slots=True)
class NewKey:
    """What a new key is asked to be, validated field by field by the entrypoint."""

    name: str
    type: KeyType
    environment: Environment = "live"
    scopes: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    resource: str | None = None
    algorithm: Algorithm | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    rate_limit: RateLimit | None = None
    expires_in: ExpiresIn | None = None
    expires_at: datetime | None = None
    rate_limits: tuple[NamedRateLimit, ...] = ()
    credits: Credits | None = None
    allowed_cidrs: tuple[str, ...] = ()
    identity_id: str | None = None


@dataclass(frozen=True, slots=True)
class Issued:
    """A command that hands out new material: its outcome and the once-only fields.

    ``handed_out`` is ``{"secret": …}`` or ``{"private_key": …}``; on a replay
    its values are None (a secret is never shown twice).
    """

    outcome: CommandOutcome
    handed_out: dict[str, str | None]


@dataclass(frozen=True, slots=True)
class _Material:
    """A new secret or key pair: what the log keeps, and what only the issuer ever sees."""

    handed_out: dict[str, str]
    secret_hash: str | None = None
    hint: str | None = None
    public_key: str | None = None


def service_key_problem(new: NewKey) -> str | None:
    """Why ``new`` cannot be a service key (a key of the ``_system`` org), or None.

    The one statement of the rules: service keys are secret keys, their scopes
    are service scopes, and ``metadata.orgs`` (when given) lists tenant orgs.
    """
    if new.type != "secret":
        return "service keys are secret keys"
    if new.allowed_cidrs or new.credits is not None or new.identity_id is not None:
        return _NOT_FOR_SERVICE_KEYS
    return service_scopes_problem(new.scopes) or service_metadata_problem(new.metadata)


_NOT_FOR_SERVICE_KEYS = "allowed_cidrs, credits and identity_id are not for service keys"
# Aspects a service key does not take: its callers are services, not customers.
_CUSTOMER_ASPECTS = ("allowed_cidrs", "credits", "identity_id")


def service_scopes_problem(scopes: tuple[str, ...]) -> str | None:
    """Why ``scopes`` cannot be a service key's scopes, or None."""
    if not set(scopes) <= set(SERVICE_SCOPES):
        return f"service key scopes must be among {', '.join(SERVICE_SCOPES)}"
    return None


def service_metadata_problem(metadata: dict[str, Any]) -> str | None:
    """Why ``metadata`` cannot be a service key's metadata (``orgs`` lists tenant orgs), or None."""
    orgs = metadata.get("orgs")
    if orgs is not None and not (isinstance(orgs, list) and all(is_tenant_org(o) for o in orgs)):
        return "metadata.orgs must be a list of org ids"
    return None


def _refuse_body(problem: str | None) -> None:
    if problem:
        detail = {"loc": _problem_field(problem), "msg": problem}
        raise KeyledgerError("validation_error", problem, [detail])


def _problem_field(problem: str) -> list[str]:
    """The ``loc`` of a service key problem: the field, as a body validation error names it."""
    if problem.startswith("service key scopes"):
        return ["scopes"]
    if problem.startswith("metadata.orgs"):
        return ["metadata", "orgs"]
    if problem == _NOT_FOR_SERVICE_KEYS:
        return [_CUSTOMER_ASPECTS[0]]
    return ["type"]


def expiry_of(new: NewKey, now: datetime) -> datetime | None:
    """When ``new`` expires: ``expires_at`` (which must be in the future) or ``expires_in``."""
    if new.expires_at is not None:
        if new.expires_at <= now:
            raise KeyledgerError(
                "validation_error",
                "expires_at must be in the future",
                [{"loc": ["expires_at"], "msg": "must be in the future"}],
            )
        return new.expires_at
    return expiry_from(new.expires_in or "never", now)


async def _new_material(
    pepper: bytes, key_type: KeyType, environment: Environment, algorithm: Algorithm
) -> _Material:
    """A fresh secret (hashed with ``pepper``) or, for signing keys, a key pair."""
    if key_type == "signing":
        # Key generation (RSA above all) takes long enough to stall the event loop.
        pair = await asyncio.to_thread(key_material.new_signing_key_pair, algorithm)
        return _Material({"private_key": pair.private_pem}, public_key=pair.public_pem)
    secret = key_material.new_secret(key_type, environment)
    return _Material(
        {"secret": secret},
        secret_hash=key_material.secret_hash(pepper, secret),
        hint=key_material.hint(secret),
    )


class KeyCommands(Protocol):
    """What the use cases run commands through: ``service.key_commands.KeyCommandHandler``
    (PostgreSQL) or ``service.in_memory_commands.InMemoryKeyCommands`` (tests)."""

    async def handle(
        self,
        command: Command,
        *,
        org_id: str,
        actor: Actor,
        if_match: int | None = None,
        idempotent: IdempotentRequest | None = None,
        caller: Caller | None = None,
    ) -> CommandOutcome:
        """Decide and record ``command`` on a key of ``org_id``; returns once recorded."""

    async def load_state(self, org_id: str, key_id: str) -> KeyState | None:
        """A key's current state (None if absent or of another org)."""

    async def revoke_many(self, request: RevocationRequest) -> RevocationOutcome:
        """Record a bulk revocation in one unit: all of its events or none."""


class KeyLifecycle:
    """The key use cases, run through one ``KeyCommands``."""

    def __init__(self, commands: KeyCommands, pepper: bytes) -> None:
        self.commands = commands
        self.pepper = pepper

    async def generate(self, issuer: Issuer, new: NewKey) -> Issued:
        """Generate a key; its secret or private key is in ``handed_out``, this once."""
        if issuer.org_id == SYSTEM_ORG:
            _refuse_body(service_key_problem(new))
        now = utc_now()
        expires_at = expiry_of(new, now)
        algorithm: Algorithm | None = (
            (new.algorithm or DEFAULT_ALGORITHM) if new.type == "signing" else None
        )
        material = await _new_material(
            self.pepper, new.type, new.environment, algorithm or DEFAULT_ALGORITHM
        )
        command = GenerateKey(
            key_id=new_key_id(),
            org_id=issuer.org_id,
            name=new.name,
            type=new.type,
            environment=new.environment,
            issued_at=now,
            scopes=tuple(dict.fromkeys(new.scopes)),
            allowed_origins=tuple(dict.fromkeys(new.allowed_origins)),
            resource=new.resource,
            algorithm=algorithm,
            metadata=new.metadata,
            rate_limit=new.rate_limit,
            rate_limits=new.rate_limits,
            credits=new.credits,
            allowed_cidrs=tuple(dict.fromkeys(new.allowed_cidrs)),
            identity_id=new.identity_id,
            expires_at=expires_at,
            secret_hash=material.secret_hash,
            hint=material.hint,
            public_key=material.public_key,
        )
        return await self._issue(issuer, command, material)

    async def rotate(self, issuer: Issuer, key_id: str, grace_period: str = "24h") -> Issued:
        """Give a key a new secret or key pair; the old one stays valid ``grace_period``."""
        # The new material must match the key's type, environment and algorithm.
        state = await self.commands.load_state(issuer.org_id, key_id)
        if state is None:
            raise KeyledgerError("key_not_found", "no such key")
        material = await _new_material(
            self.pepper, state.type, state.environment, state.algorithm or DEFAULT_ALGORITHM
        )
        command = RotateKey(
            key_id=key_id,
            issued_at=utc_now(),
            grace_period=parse_grace_period(grace_period),
            secret_hash=material.secret_hash,
            hint=material.hint,
            public_key=material.public_key,
        )
        return await self._issue(issuer, command, material)

    async def rename(self, issuer: Issuer, key_id: str, name: str) -> CommandOutcome:
        """Give a key a new name."""
        return await self._run(issuer, RenameKey(key_id=key_id, name=name, issued_at=utc_now()))

    async def update(
        self, issuer: Issuer, key_id: str, changes: Mapping[str, Any]
    ) -> CommandOutcome:
        """Change aspects of a key (``UpdateKey``'s fields): one event per aspect changed.

        A service key (org ``_system``) keeps service scopes and a valid ``metadata.orgs``:
        a change cannot give it authority a new one could not have.
        """
        if issuer.org_id == SYSTEM_ORG:
            if "scopes" in changes:
                _refuse_body(service_scopes_problem(changes["scopes"]))
            if "metadata" in changes:
                _refuse_body(service_metadata_problem(changes["metadata"]))
            if any(changes.get(aspect) for aspect in _CUSTOMER_ASPECTS):
                _refuse_body(_NOT_FOR_SERVICE_KEYS)
        values = dict(changes)
        for listed in ("scopes", "allowed_origins", "allowed_cidrs"):
            if listed in values:
                values[listed] = tuple(dict.fromkeys(values[listed]))
        command = UpdateKey(key_id=key_id, issued_at=utc_now(), **values)
        return await self._run(issuer, command)

    async def disable(self, issuer: Issuer, key_id: str, reason: str | None) -> CommandOutcome:
        """Stop a key verifying until it is enabled again."""
        command = DisableKey(key_id=key_id, reason=reason, issued_at=utc_now())
        return await self._run(issuer, command)

    async def enable(self, issuer: Issuer, key_id: str) -> CommandOutcome:
        """Let a disabled key verify again (within the org's active-key quota)."""
        return await self._run(issuer, EnableKey(key_id=key_id, issued_at=utc_now()))

    async def revoke(self, issuer: Issuer, key_id: str, reason: RevokeReason) -> CommandOutcome:
        """End a key for good."""
        command = RevokeKey(key_id=key_id, reason=reason, issued_at=utc_now())
        return await self._run(issuer, command)

    async def revoke_many(
        self,
        issuer: Issuer,
        selection: KeySelection,
        reason: RevokeReason,
        environment: Environment | None = None,
    ) -> RevocationOutcome:
        """End many keys of the issuer's org for good, in one transaction (incident response).

        ``selection`` names them (``NamedKeys``), or takes every key one actor
        generated (``CreatedBy``) or every key (``AllKeys``), within
        ``environment`` when given. ``If-Match`` does not apply (many versions).
        """
        command = RevokeKeys(selection, reason, utc_now(), environment)
        return await self.commands.revoke_many(
            RevocationRequest(
                command,
                issuer.org_id,
                issuer.actor,
                idempotent=issuer.idempotent,
                caller=issuer.caller,
            )
        )

    async def _issue(self, issuer: Issuer, command: Command, material: _Material) -> Issued:
        outcome = await self._run(issuer, command)
        if outcome.replayed:
            # The material made for this retry was never recorded: it is thrown away.
            return Issued(outcome, dict.fromkeys(material.handed_out))
        return Issued(outcome, dict(material.handed_out))

    async def _run(self, issuer: Issuer, command: Command) -> CommandOutcome:
        return await self.commands.handle(
            command,
            org_id=issuer.org_id,
            actor=issuer.actor,
            if_match=issuer.if_match,
            idempotent=issuer.idempotent,
            caller=issuer.caller,
        )
