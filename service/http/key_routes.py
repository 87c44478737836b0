"""HTTP commands on keys (docs/api.md#commands): requests into use cases, outcomes into responses.

The use cases are ``service.key_lifecycle``; this module reads headers and
bodies, and picks the status (201 for a new key, else 200) and the body.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from events.models import Actor, RateLimit
from service.domain.bulk_revocation import AllKeys, CreatedBy, KeySelection, NamedKeys
from service.domain.ids import is_key_id
from service.domain.orgs import is_org_id
from service.domain.vocabulary import HEADER_TEXT
from service.errors import KeyledgerError
from service.http.body import read_model
from service.http.context import authenticate, keyledger
from service.http.encoded import EncodedResponse
from service.http.request_context import request_id_of
from service.http.schemas import (
    DisableKeyBody,
    EnableKeyBody,
    GenerateKeyBody,
    RenameKeyBody,
    RevokeKeyBody,
    RevokeKeysBody,
    RotateKeyBody,
    UpdateKeyBody,
    rate_limits_of,
)
from service.key_commands import CommandOutcome, IdempotentRequest
from service.key_lifecycle import Issuer, KeyLifecycle, NewKey
from service.redaction import looks_like_secret
from service.verification.callers import Caller

routes = web.RouteTableDef()
_IF_MATCH = re.compile(r'\A(?:W/)?"?([0-9]{1,9})"?\Z')


@dataclass(frozen=True, slots=True)
class CommandRequest:
    """What every command takes from the request besides its body."""

    # Everything but the idempotent request, which needs the body's fingerprint.
    issuer: Issuer
    idempotency_key: str | None

    def issuer_of(self, request: web.Request, raw_body: Any) -> Issuer:
        """The issuer of a command sent with ``raw_body``."""
        if self.idempotency_key is None:
            return self.issuer
        fingerprint = IdempotentRequest.fingerprint_of(request.method, request.path, raw_body)
        return replace(self.issuer, idempotent=IdempotentRequest(self.idempotency_key, fingerprint))


async def command_request(request: web.Request, scope: str) -> CommandRequest:
    caller = await authenticate(request)
    caller.require(scope)
    org_id = visible_org(request, caller)
    on_behalf_of = request.headers.get("X-On-Behalf-Of")
    if on_behalf_of is not None and (
        not HEADER_TEXT.matches(on_behalf_of) or looks_like_secret(on_behalf_of)
    ):
        # It is stored in the event's actor and published: never a secret.
        raise KeyledgerError(
            "invalid_header",
            "X-On-Behalf-Of must be 1-255 printable ASCII characters, and not a secret",
        )
    idempotency_key = request.headers.get("Idempotency-Key")
    if idempotency_key is not None and not HEADER_TEXT.matches(idempotency_key):
        raise KeyledgerError(
            "invalid_header", "Idempotency-Key must be 1-255 printable ASCII characters"
        )
    actor = Actor(id=caller.key_id, on_behalf_of=on_behalf_of, request_id=request_id_of(request))
    issuer = Issuer(org_id=org_id, actor=actor, caller=caller, if_match=_if_match(request))
    return CommandRequest(issuer, idempotency_key)


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


def _keys(request: web.Request) -> KeyLifecycle:
    return keyledger(request).keys


def _response(
    outcome: CommandOutcome, handed_out: dict[str, str | None] | None = None
) -> web.StreamResponse:
    """201 with a new key, else 200; the once-only secret or private key of a first run.

    Written in one piece (``service.http.encoded``): aiohttp's response and header
    machinery was a measurable share of every command's CPU.
    """
    body: dict[str, Any] = {"key": outcome.key, "position": outcome.position}
    if handed_out:
        body |= handed_out
    if outcome.replayed:
        body["replayed"] = True
    return EncodedResponse(
        json.dumps(body).encode(),
        status=201 if outcome.created else 200,
        head=b'ETag: "%d"\r\n' % outcome.key["version"],
    )


def _new_key(body: GenerateKeyBody) -> NewKey:
    return NewKey(
        name=body.name,
        type=body.type,
        environment=body.environment,
        scopes=tuple(body.scopes),
        allowed_origins=tuple(body.allowed_origins or ()),
        resource=body.resource,
        algorithm=body.algorithm,
        metadata=body.metadata,
        rate_limit=RateLimit(**body.rate_limit.model_dump()) if body.rate_limit else None,
        rate_limits=rate_limits_of(body.rate_limits, None),
        credits=body.credits.credits() if body.credits else None,
        allowed_cidrs=tuple(body.allowed_cidrs),
        identity_id=body.identity_id,
        expires_in=body.expires_in,
        expires_at=body.expires_at,
    )


def update_changes(body: UpdateKeyBody) -> dict[str, Any]:
    """The aspects a PATCH body names, as ``UpdateKey`` takes them."""
    changes: dict[str, Any] = {
        name: getattr(body, name)
        for name in ("name", "metadata", "expires_at", "identity_id")
        if body.given(name)
    }
    for name in ("scopes", "allowed_origins", "allowed_cidrs"):
        if body.given(name):
            changes[name] = tuple(getattr(body, name))
    if body.given("rate_limits") or body.given("rate_limit"):
        changes["rate_limits"] = rate_limits_of(body.rate_limits, body.rate_limit)
    if body.given("credits"):
        changes["credits"] = body.credits.credits() if body.credits else None
    return changes


@routes.post("/v1/orgs/{org_id}/keys")
async def generate_key(request: web.Request) -> web.StreamResponse:
    ctx = await command_request(request, "keys:write")
    body, raw = await read_model(request, GenerateKeyBody)
    issued = await _keys(request).generate(ctx.issuer_of(request, raw), _new_key(body))
    return _response(issued.outcome, issued.handed_out)


@routes.post("/v1/orgs/{org_id}/keys/{key_id}/rename")
async def rename_key(request: web.Request) -> web.StreamResponse:
    ctx = await command_request(request, "keys:write")
    key_id = path_key_id(request)
    body, raw = await read_model(request, RenameKeyBody)
    return _response(await _keys(request).rename(ctx.issuer_of(request, raw), key_id, body.name))


@routes.patch("/v1/orgs/{org_id}/keys/{key_id}")
async def update_key(request: web.Request) -> web.StreamResponse:
    ctx = await command_request(request, "keys:write")
    key_id = path_key_id(request)
    body, raw = await read_model(request, UpdateKeyBody)
    outcome = await _keys(request).update(ctx.issuer_of(request, raw), key_id, update_changes(body))
    return _response(outcome)


@routes.post("/v1/orgs/{org_id}/keys/{key_id}/disable")
async def disable_key(request: web.Request) -> web.StreamResponse:
    ctx = await command_request(request, "keys:write")
    key_id = path_key_id(request)
    body, raw = await read_model(request, DisableKeyBody)
    return _response(await _keys(request).disable(ctx.issuer_of(request, raw), key_id, body.reason))


@routes.post("/v1/orgs/{org_id}/keys/{key_id}/enable")
async def enable_key(request: web.Request) -> web.StreamResponse:
    ctx = await command_request(request, "keys:write")
    key_id = path_key_id(request)
    _, raw = await read_model(request, EnableKeyBody)
    return _response(await _keys(request).enable(ctx.issuer_of(request, raw), key_id))


@routes.post("/v1/orgs/{org_id}/keys/{key_id}/revoke")
async def revoke_key(request: web.Request) -> web.StreamResponse:
    ctx = await command_request(request, "keys:write")
    key_id = path_key_id(request)
    body, raw = await read_model(request, RevokeKeyBody)
    return _response(await _keys(request).revoke(ctx.issuer_of(request, raw), key_id, body.reason))


@routes.post("/v1/orgs/{org_id}/keys/{key_id}/rotate")
async def rotate_key(request: web.Request) -> web.StreamResponse:
    ctx = await command_request(request, "keys:write")
    key_id = path_key_id(request)
    body, raw = await read_model(request, RotateKeyBody)
    issued = await _keys(request).rotate(ctx.issuer_of(request, raw), key_id, body.grace_period)
    return _response(issued.outcome, issued.handed_out)


def _selection(body: RevokeKeysBody) -> KeySelection:
    if body.key_ids is not None:
        return NamedKeys(tuple(body.key_ids))
    if body.created_by is not None:
        return CreatedBy(body.created_by)
    return AllKeys()


@routes.post("/v1/orgs/{org_id}/revocations")
async def revoke_keys(request: web.Request) -> web.Response:
    """Bulk revocation (docs/api.md#bulk-revocation): every selected key, in one transaction."""
    ctx = await command_request(request, "keys:write")
    if ctx.issuer.if_match is not None:
        raise KeyledgerError("invalid_header", "If-Match does not apply to a bulk revocation")
    body, raw = await read_model(request, RevokeKeysBody)
    outcome = await _keys(request).revoke_many(
        ctx.issuer_of(request, raw), _selection(body), body.reason, body.environment
    )
    answer = outcome.answer()
    if outcome.replayed:
        answer["replayed"] = True
    return web.json_response(answer)
