"""HTTP commands on keys (SPEC §4) and the single-key read."""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, TypedDict

from aiohttp import web

from events.models import Actor, RateLimit
from events.vocabulary import Algorithm, Environment, KeyType
from service.callers import Caller
from service.clock import utc_now
from service.domain import key_material
from service.domain.commands import (
    Command,
    DisableKey,
    EnableKey,
    GenerateKey,
    RenameKey,
    RevokeKey,
    RotateKey,
)
from service.domain.durations import expiry_from, parse_grace_period
from service.domain.ids import is_key_id, new_key_id
from service.domain.orgs import SYSTEM_ORG, is_org_id
from service.domain.vocabulary import HEADER_TEXT
from service.errors import KeyledgerError
from service.http.body import read_model
from service.http.context import CALLERS, COMMANDS, SETTINGS, authenticate
from service.http.middleware import request_id_of
from service.http.schemas import (
    DisableKeyBody,
    EnableKeyBody,
    GenerateKeyBody,
    RenameKeyBody,
    RevokeKeyBody,
    RotateKeyBody,
    check_service_key,
)
from service.key_commands import CommandOutcome, IdempotentRequest

routes = web.RouteTableDef()
_IF_MATCH = re.compile(r'\A(?:W/)?"?([0-9]{1,9})"?\Z')


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """What every command takes from the request besides its body."""

    caller: Caller
    org_id: str
    actor: Actor
    if_match: int | None
    idempotency_key: str | None


async def _command_request(request: web.Request, scope: str) -> CommandRequest:
    caller = await authenticate(request)
    caller.require(scope)
    org_id = visible_org(request, caller)
    on_behalf_of = request.headers.get("X-On-Behalf-Of")
    if on_behalf_of is not None and not HEADER_TEXT.matches(on_behalf_of):
        raise KeyledgerError(
            "invalid_header", "X-On-Behalf-Of must be 1-255 printable ASCII characters"
        )
    idempotency_key = request.headers.get("Idempotency-Key")
    if idempotency_key is not None and not HEADER_TEXT.matches(idempotency_key):
        raise KeyledgerError(
            "invalid_header", "Idempotency-Key must be 1-255 printable ASCII characters"
        )
    return CommandRequest(
        caller=caller,
        org_id=org_id,
        actor=Actor(id=caller.key_id, on_behalf_of=on_behalf_of, request_id=request_id_of(request)),
        if_match=_if_match(request),
        idempotency_key=idempotency_key,
    )


def visible_org(request: web.Request, caller: Caller) -> str:
    """The path's org, if it is well-formed and the caller may see it (else 422/404)."""
    org_id = request.match_info["org_id"]
    if not is_org_id(org_id):
        raise KeyledgerError(
            "validation_error",
            "an org id is 1-63 of a-z, 0-9, _ and -, starting with a letter or digit",
            [{"loc": ["path", "org_id"], "msg": "invalid org id"}],
        )
    if not caller.can_see_org(org_id):
        raise KeyledgerError("org_not_found", "no such org")
    return org_id


def path_key_id(request: web.Request) -> str:
    """The path's key id; one that cannot exist is simply not found."""
    key_id = request.match_info["key_id"]
    if not is_key_id(key_id):
        raise KeyledgerError("key_not_found", "no such key")
    return key_id


def _if_match(request: web.Request) -> int | None:
    value = request.headers.get("If-Match")
    if value is None or value.strip() == "*":
        return None
    match = _IF_MATCH.fullmatch(value.strip())
    if not match:
        raise KeyledgerError("invalid_header", 'If-Match must be a key version, e.g. "3"')
    return int(match[1])


async def _run(
    request: web.Request,
    ctx: CommandRequest,
    command: Command,
    raw_body: Any,
    handed_out: dict[str, str] | None = None,
) -> web.Response:
    """Run ``command``; add the once-only secret or private key to a first response."""
    idempotent = None
    if ctx.idempotency_key is not None:
        idempotent = IdempotentRequest(
            ctx.idempotency_key,
            IdempotentRequest.fingerprint_of(request.method, request.path, raw_body),
        )
    outcome: CommandOutcome = await request.app[COMMANDS].handle(
        command,
        org_id=ctx.org_id,
        actor=ctx.actor,
        if_match=ctx.if_match,
        idempotent=idempotent,
        caller=ctx.caller,
    )
    body = dict(outcome.body)
    if handed_out:
        # A replay returns the key but never the secret again.
        body |= {name: None for name in handed_out} if outcome.replayed else handed_out
    if outcome.replayed:
        body["replayed"] = True
    headers = {"ETag": f'"{body["key"]["version"]}"'}
    return web.json_response(body, status=outcome.status, headers=headers)


@routes.post("/v1/orgs/{org_id}/keys")
async def generate_key(request: web.Request) -> web.Response:
    ctx = await _command_request(request, "keys:write")
    body, raw = await read_model(request, GenerateKeyBody)
    if ctx.org_id == SYSTEM_ORG:
        check_service_key(body)
    now = utc_now()
    if body.expires_at is not None and body.expires_at <= now:
        raise KeyledgerError(
            "validation_error",
            "expires_at must be in the future",
            [{"loc": ["body", "expires_at"], "msg": "must be in the future"}],
        )
    expires_at = body.expires_at or expiry_from(body.expires_in or "never", now)
    material, handed_out = await _new_material(
        request, body.type, body.environment, body.algorithm or "ed25519"
    )
    command = GenerateKey(
        key_id=new_key_id(),
        org_id=ctx.org_id,
        name=body.name,
        type=body.type,
        environment=body.environment,
        issued_at=now,
        scopes=tuple(dict.fromkeys(body.scopes)),
        allowed_origins=tuple(dict.fromkeys(body.allowed_origins or ())),
        resource=body.resource,
        algorithm=(body.algorithm or "ed25519") if body.type == "signing" else None,
        metadata=body.metadata,
        rate_limit=RateLimit(**body.rate_limit.model_dump()) if body.rate_limit else None,
        expires_at=expires_at,
        **material,
    )
    return await _run(request, ctx, command, raw, handed_out)


class _Material(TypedDict, total=False):
    """What a new key's command records of its material (never the secret itself)."""

    public_key: str
    secret_hash: str
    hint: str


async def _new_material(
    request: web.Request, key_type: KeyType, environment: Environment, algorithm: Algorithm
) -> tuple[_Material, dict[str, str]]:
    """(fields for the command, fields for the response only) of a new secret or key pair."""
    if key_type == "signing":
        pair = await asyncio.to_thread(key_material.new_signing_key_pair, algorithm)
        return {"public_key": pair.public_pem}, {"private_key": pair.private_pem}
    secret = key_material.new_secret(key_type, environment)
    pepper = request.app[SETTINGS].pepper_bytes
    return (
        {
            "secret_hash": key_material.secret_hash(pepper, secret),
            "hint": key_material.hint(secret),
        },
        {"secret": secret},
    )


@routes.post("/v1/orgs/{org_id}/keys/{key_id}/rename")
async def rename_key(request: web.Request) -> web.Response:
    ctx = await _command_request(request, "keys:write")
    key_id = path_key_id(request)
    body, raw = await read_model(request, RenameKeyBody)
    command = RenameKey(key_id=key_id, name=body.name, issued_at=utc_now())
    return await _run(request, ctx, command, raw)


@routes.post("/v1/orgs/{org_id}/keys/{key_id}/disable")
async def disable_key(request: web.Request) -> web.Response:
    ctx = await _command_request(request, "keys:write")
    key_id = path_key_id(request)
    body, raw = await read_model(request, DisableKeyBody)
    command = DisableKey(key_id=key_id, reason=body.reason, issued_at=utc_now())
    return await _run(request, ctx, command, raw)


@routes.post("/v1/orgs/{org_id}/keys/{key_id}/enable")
async def enable_key(request: web.Request) -> web.Response:
    ctx = await _command_request(request, "keys:write")
    key_id = path_key_id(request)
    _, raw = await read_model(request, EnableKeyBody)
    return await _run(request, ctx, EnableKey(key_id=key_id, issued_at=utc_now()), raw)


@routes.post("/v1/orgs/{org_id}/keys/{key_id}/revoke")
async def revoke_key(request: web.Request) -> web.Response:
    ctx = await _command_request(request, "keys:write")
    key_id = path_key_id(request)
    body, raw = await read_model(request, RevokeKeyBody)
    command = RevokeKey(key_id=key_id, reason=body.reason, issued_at=utc_now())
    return await _run(request, ctx, command, raw)


@routes.post("/v1/orgs/{org_id}/keys/{key_id}/rotate")
async def rotate_key(request: web.Request) -> web.Response:
    ctx = await _command_request(request, "keys:write")
    key_id = path_key_id(request)
    body, raw = await read_model(request, RotateKeyBody)
    state = await request.app[COMMANDS].load_state(ctx.org_id, key_id)
    if state is None:
        raise KeyledgerError("key_not_found", "no such key")
    material, handed_out = await _new_material(
        request, state.type, state.environment, state.algorithm or "ed25519"
    )
    command = RotateKey(
        key_id=key_id,
        issued_at=utc_now(),
        grace_period=parse_grace_period(body.grace_period),
        **material,
    )
    return await _run(request, ctx, command, raw, handed_out)


__all__ = ["CALLERS", "routes"]
