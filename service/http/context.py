"""Typed application keys and the per-request caller lookup."""

from __future__ import annotations

import asyncpg
from aiohttp import web

from service.http.middleware import CALLER_ID
from service.key_commands import KeyCommandHandler
from service.settings import Settings
from service.truncation_guard import TruncationGuard
from service.verification.callers import Caller, CallerAuthenticator

SETTINGS = web.AppKey("settings", Settings)
POOL = web.AppKey("pool", asyncpg.Pool)
COMMANDS = web.AppKey("commands", KeyCommandHandler)
CALLERS = web.AppKey("callers", CallerAuthenticator)
# Verify, authorize, commands, readyz and audit verify consult it (SPEC §10).
TRUNCATION_GUARD = web.AppKey("truncation_guard", TruncationGuard)


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def authenticate(request: web.Request) -> Caller:
    """The calling service key (401 when absent, malformed, unknown or inactive)."""
    caller = await request.app[CALLERS].authenticate(
        bearer_token(request.headers.get("Authorization"))
    )
    request[CALLER_ID] = caller.key_id
    return caller
