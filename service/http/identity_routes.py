"""HTTP on identities (docs/api.md#identities): ``PUT`` sets one, ``GET`` reads it."""

from __future__ import annotations

from aiohttp import web

from service.domain.vocabulary import identity_id as checked_identity_id
from service.errors import KeyledgerError
from service.http.body import read_model
from service.http.context import authenticate, keyledger
from service.http.key_routes import command_request, visible_org
from service.http.schemas import ConfigureIdentityBody, rate_limits_of

routes = web.RouteTableDef()


def path_identity_id(request: web.Request) -> str:
    """The path's identity id (1-128 characters of plain text, else 422)."""
    value = request.match_info["identity_id"]
    try:
        if len(value) > 128:
            raise ValueError("an identity id is at most 128 characters")
        return checked_identity_id(value)
    except ValueError as exc:
        raise KeyledgerError(
            "validation_error",
            "an identity id is 1-128 characters of plain text",
            [{"loc": ["path", "identity_id"], "msg": str(exc)}],
        ) from None


@routes.put("/v1/orgs/{org_id}/identities/{identity_id}")
async def configure_identity(request: web.Request) -> web.Response:
    """Create or replace an identity's shared rate limits and metadata."""
    ctx = await command_request(request, "keys:write")
    identity_id = path_identity_id(request)
    body, raw = await read_model(request, ConfigureIdentityBody)
    outcome = await keyledger(request).identities.configure(
        ctx.issuer_of(request, raw),
        identity_id,
        rate_limits_of(body.rate_limits, None),
        body.metadata,
    )
    headers = {"ETag": f'"{outcome.identity["version"]}"'}
    return web.json_response(
        outcome.answer(), status=201 if outcome.created else 200, headers=headers
    )


@routes.get("/v1/orgs/{org_id}/identities/{identity_id}")
async def get_identity(request: web.Request) -> web.Response:
    """One identity as it is now."""
    caller = await authenticate(request)
    caller.require("keys:read")
    org_id = visible_org(request, caller)
    identity = await keyledger(request).identities.get(org_id, path_identity_id(request))
    return web.json_response(identity, headers={"ETag": f'"{identity["version"]}"'})
