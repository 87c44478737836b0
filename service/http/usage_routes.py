"""``POST /v1/usage`` (docs/api.md#usage): uses of keys verified outside this service.

A verifier inside a calling service (``keyledger_client.LocalVerifier``) answers
from its own cache and never reaches ``/v1/verify`` for those answers, so it
reports the uses here in batches; they go through the same ``UsageRecorder`` as
this replica's own verifications, so ``last_used_at`` stays true either way.

Only keys the caller could verify count: a key id that is unknown, or in an org
the caller's service key may not see, is counted as ignored and changes nothing
(no way to learn which, and no way to touch another tenant's keys). A time in
the future is taken as now: a reported use can only say "used by now".
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from aiohttp import web
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from service.clock import utc_now
from service.domain.vocabulary import KEY_ID
from service.http.body import read_body
from service.http.context import authenticate, keyledger

routes = web.RouteTableDef()
# 500 uses of at most ~80 bytes each stay well within the 64 KiB body limit.
MAX_USES = 500


class KeyUse(BaseModel):
    """One key seen in use, at ``at`` (UTC, any precision; kept to the minute)."""

    model_config = ConfigDict(extra="forbid")

    key_id: Annotated[str, Field(pattern=KEY_ID.json_pattern)]
    at: AwareDatetime


class UsageReport(BaseModel):
    """A batch of uses, oldest or newest first: the latest per key wins."""

    model_config = ConfigDict(extra="forbid")

    uses: Annotated[list[KeyUse], Field(min_length=1, max_length=MAX_USES)]


@routes.post("/v1/usage")
async def report_usage(request: web.Request) -> web.Response:
    """Record reported uses; answers how many were recorded and how many ignored."""
    service = keyledger(request)
    caller = await authenticate(request)
    caller.require("keys:verify")
    report = await read_body(request, UsageReport)
    now = utc_now()
    latest: dict[str, datetime] = {}
    ignored = 0
    for use in report.uses:
        entry = service.verifier.index.by_key_id(use.key_id)
        if entry is None or not caller.can_see_org(entry.org_id):
            ignored += 1
            continue
        at = min(use.at, now)
        if use.key_id not in latest or latest[use.key_id] < at:
            latest[use.key_id] = at
    for key_id, at in latest.items():
        service.usage.report(key_id, at)
    return web.json_response({"recorded": len(report.uses) - ignored, "ignored": ignored})
