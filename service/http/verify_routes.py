"""``POST /v1/verify`` and ``GET /v1/authorize`` (docs/api.md#verification).

Both answer from this replica's verification index; the check order is
documented in ``service.verification.policy``. ``verify`` always answers 200
with the verdict in the body; ``authorize`` (for reverse proxies) answers the
verdict's ``http_status`` itself, with ``X-Keyledger-*`` headers on success.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Mapping
from typing import Annotated, Self

import msgspec
from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    model_validator,
)

from events.vocabulary import ENVIRONMENTS, Environment
from service.clock import utc_now
from service.domain.vocabulary import SCOPE, RequestedScope, ascii_integer
from service.errors import KeyledgerError
from service.http.body import model_from_bytes, read_bytes
from service.http.context import SETTINGS, authenticate, bearer_token, credential_header, keyledger
from service.http.encoded import EncodedJson, EncodedResponse, header_lines
from service.http.query_params import reject_repeated, reject_unknown
from service.http.request_context import context_of
from service.verification.index import IndexEntry
from service.verification.ip_allowlist import client_address, parse_address
from service.verification.policy import (
    HTTP_STATUS,
    Requirements,
    SignedRequest,
    Verdict,
    VerifyCode,
)
from service.verification.rate_limits import LimitState
from service.verification.verifier import Credential

routes = web.RouteTableDef()
_MAX_SCOPES = 100
MAX_COST = 1000


def ip_address_text(value: str) -> str:
    """An IPv4 or IPv6 address (no network, no port), as sent."""
    if parse_address(value) is None:
        raise ValueError("ip is an IPv4 or IPv6 address")
    return value


class VerifyBody(BaseModel):
    """A verify request: a bearer ``key``, or a signed request by ``key_id``."""

    model_config = ConfigDict(extra="forbid")

    key: str | None = None
    key_id: str | None = None
    signature: str | None = None
    method: str | None = None
    path: Annotated[str, StringConstraints(max_length=8192)] | None = None
    body: str | None = None
    timestamp: StrictInt | str | None = None
    origin: Annotated[str, StringConstraints(max_length=2048)] | None = None
    resource: Annotated[str, StringConstraints(max_length=1024)] | None = None
    scopes: Annotated[list[RequestedScope], Field(max_length=_MAX_SCOPES)] | None = None
    environment: Environment | None = None
    # Strict as msgspec's reader of the same field: a JSON integer, not "5", 5.0 or true.
    min_position: Annotated[StrictInt, Field(ge=0, le=10**18 - 1)] | None = None
    ip: Annotated[str, StringConstraints(max_length=64), AfterValidator(ip_address_text)] | None = (
        None
    )
    cost: Annotated[StrictInt, Field(ge=0, le=MAX_COST)] = 1

    @model_validator(mode="after")
    def _one_credential(self) -> Self:
        if (self.key is None) == (self.key_id is None):
            raise ValueError("give either 'key' (bearer) or 'key_id' (signed request)")
        if self.key is not None:
            # Plain attribute tests, not a loop over names: this runs on every verify.
            if (
                self.signature is not None
                or self.method is not None
                or self.path is not None
                or self.body is not None
                or self.timestamp is not None
            ):
                raise ValueError("signature fields go with 'key_id', not with 'key'")
            return self
        missing = [f for f in ("signature", "method", "path") if getattr(self, f) is None]
        if missing:
            raise ValueError(f"a signed request needs {', '.join(missing)}")
        return self

    def credential(self) -> Credential:
        if self.key is not None:
            return self.key
        return SignedRequest(
            key_id=self.key_id or "",
            signature=self.signature or "",
            method=self.method or "",
            path=self.path or "",
            body=self.body,
            timestamp=None if self.timestamp is None else str(self.timestamp),
        )

    def requirements(self) -> Requirements:
        return Requirements(
            origin=self.origin,
            resource=self.resource,
            scopes=tuple(self.scopes or ()),
            environment=self.environment,
            ip=self.ip,
            cost=self.cost,
        )


class BearerBody(msgspec.Struct, forbid_unknown_fields=True):
    """The usual verify body, a bearer ``key`` and what the request needs, read by msgspec.

    msgspec decodes and checks it in one pass, ≈6× cheaper than pydantic (0.7
    against 4 µs here), and this is most of the verify traffic. It accepts
    only what ``VerifyBody`` accepts, with the same values (a property test
    holds it to that); anything else it refuses, signed requests included,
    is read as ``VerifyBody``, so every refusal is ``VerifyBody``'s.
    """

    key: str
    origin: Annotated[str, msgspec.Meta(max_length=2048)] | None = None
    resource: Annotated[str, msgspec.Meta(max_length=1024)] | None = None
    # A tuple, as ``Requirements`` holds it: decoded as one, not copied into one.
    scopes: (
        Annotated[
            tuple[Annotated[str, msgspec.Meta(pattern=SCOPE.regex.pattern)], ...],
            msgspec.Meta(max_length=_MAX_SCOPES),
        ]
        | None
    ) = None
    environment: Environment | None = None
    min_position: Annotated[int, msgspec.Meta(ge=0, le=10**18 - 1)] | None = None
    # Checked as an address by ``VerifyBody``'s rule, once decoded (``_verify_body``).
    ip: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    cost: Annotated[int, msgspec.Meta(ge=0, le=MAX_COST)] = 1

    def credential(self) -> Credential:
        return self.key

    def requirements(self) -> Requirements:
        # Positional: half the cost of keywords, on every verify (the fields' order is
        # ``Requirements``'s, which the property test of the two readers holds it to).
        return Requirements(
            self.origin, self.resource, self.scopes or (), self.environment, self.ip, self.cost
        )


_BEARER_BODY = msgspec.json.Decoder(BearerBody)


async def _verify_body(request: web.Request) -> BearerBody | VerifyBody:
    """The verify body, parsed once: as ``BearerBody`` when it is one, else as ``VerifyBody``."""
    raw = await read_bytes(request)
    if raw is not None:
        try:
            body = _BEARER_BODY.decode(raw)
        except (msgspec.MsgspecError, ValueError):  # ValueError: bytes that are not UTF-8
            pass
        else:
            if body.ip is None or parse_address(body.ip) is not None:
                return body
    return model_from_bytes(VerifyBody, raw)


@routes.post("/v1/verify")
async def verify(request: web.Request) -> web.StreamResponse:
    """Is this key good for this request? 200 with the verdict in the body.

    The one exception is 503 ``log_truncated``: while the log misses events its
    witnesses saw, no verdict is given at all (a lost revocation would read VALID)."""
    service = keyledger(request)
    now = utc_now()  # one clock read for the caller's key and the presented one
    caller = await authenticate(request, now, service)
    caller.require("keys:verify")
    # Fail closed on a truncated log: a revocation cut off it would verify VALID.
    service.guard.require_intact()
    if request.query_string:  # everything is in the body: a parameter here is a mistake
        reject_unknown(request.query, ())
    body = await _verify_body(request)
    credential, requirements = body.credential(), body.requirements()
    verifier, min_position = service.verifier, body.min_position
    verdict = await verifier.verify(
        credential,
        requirements,
        min_position=min_position,
        can_see_org=caller.can_see_org,
        now=now,
    )
    context_of(request).outcome = verdict.code
    return verdict_response(verdict)


SERVICE_KEY_HEADER = "X-Keyledger-Service-Key"


@routes.get("/v1/authorize")
async def authorize(request: web.Request) -> web.StreamResponse:
    """Forward-auth for reverse proxies: the verdict's status, headers and body."""
    service = keyledger(request)
    now = utc_now()  # one clock read for the caller's key and the presented one
    callers, secret = service.callers, credential_header(request.headers, SERVICE_KEY_HEADER)
    caller = callers.recognised(secret, now) or await callers.authenticate(
        secret, SERVICE_KEY_HEADER
    )
    context = context_of(request)
    context.caller_id = caller.key_id
    caller.require("keys:verify")
    service.guard.require_intact()
    requirements, min_position = _query_requirements(request)
    credential = _forwarded_credential(request)
    if credential is None:
        verdict = Verdict("MALFORMED")
        service.verifier.outcomes[verdict.code] += 1
    else:
        verdict = await service.verifier.verify(
            credential,
            requirements,
            min_position=min_position,
            can_see_org=caller.can_see_org,
            now=now,
        )
    headers: dict[str, str] = {}
    head = b""
    if verdict.valid and verdict.entry is not None:
        head = _identity_head(verdict.entry)
    elif verdict.retry_after is not None:
        headers = {"Retry-After": str(verdict.retry_after)}
    if verdict.ratelimits:
        headers |= ratelimit_headers(verdict.ratelimits, time.time())
    context.outcome = verdict.code
    return verdict_response(verdict, HTTP_STATUS[verdict.code], headers or None, head)


@functools.lru_cache(maxsize=4096)
def _identity_head(entry: IndexEntry) -> bytes:
    # The X-Keyledger-* lines of a VALID authorize, per entry (never mutated, as above).
    return header_lines(
        {
            "X-Keyledger-Key-Id": entry.key_id,
            "X-Keyledger-Org-Id": entry.org_id,
            "X-Keyledger-Scopes": ",".join(entry.scopes),
        }
    )


def ratelimit_headers(states: tuple[LimitState, ...], now: float) -> dict[str, str]:
    """``RateLimit-Limit``/``-Remaining``/``-Reset`` (seconds) of the limit closest to its end."""
    tightest = min(states, key=lambda s: (s.remaining, s.reset_at))
    return {
        "RateLimit-Limit": str(tightest.limit),
        "RateLimit-Remaining": str(tightest.remaining),
        "RateLimit-Reset": str(max(0, math.ceil(tightest.reset_at - now))),
    }


def verdict_response(
    verdict: Verdict,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    head: bytes = b"",
) -> EncodedResponse:
    """The verdict as JSON (``Verdict.to_json``, as ``web.json_response`` would encode it).

    The part that is the same for every request with this verdict on this key
    is encoded once (``_encoded_verdict``); per-request fields are appended to
    it, in ``to_json``'s order (they come last there).
    """
    encoded = _encoded_verdict(verdict.code, verdict.entry)
    if (
        verdict.retry_after is None
        and verdict.ratelimits is None
        and verdict.credits_remaining is None
    ):
        body = encoded.body()  # the usual case: nothing per request (no dict to build)
    else:
        body = encoded.body(verdict.request_fields())
    return EncodedResponse(body, status, headers, head)


@functools.lru_cache(maxsize=4096)
def _encoded_verdict(code: VerifyCode, entry: IndexEntry | None) -> EncodedJson:
    # Keyed by the entry object itself: entries are never mutated (every event
    # stores a new one), so the same key verified again answers the same bytes
    # without rendering and encoding them each time.
    return EncodedJson.of(Verdict(code, entry).key_fields())


# What /v1/authorize reads from its query (any other parameter is ignored: a proxy may
# pass the client's own along).
_AUTHORIZE_PARAMS = ("scopes", "environment", "resource", "cost", "min_position")


def _query_requirements(request: web.Request) -> tuple[Requirements, int | None]:
    query = request.query
    if len(query) > 1:
        # First-wins would let the client's parameter overrule the proxy's.
        reject_repeated(query, _AUTHORIZE_PARAMS)
    scopes = tuple(s for s in query.get("scopes", "").split(",") if s)
    raw_environment = query.get("environment") or None
    environment = next((e for e in ENVIRONMENTS if e == raw_environment), None)
    problems = []
    if len(scopes) > _MAX_SCOPES or not all(SCOPE.matches(s) for s in scopes):
        problems.append({"loc": ["query", "scopes"], "msg": "comma-separated scopes"})
    if raw_environment is not None and environment is None:
        problems.append({"loc": ["query", "environment"], "msg": " or ".join(ENVIRONMENTS)})
    raw_cost = query.get("cost")
    cost = 1
    if raw_cost is not None:
        parsed_cost = ascii_integer(raw_cost)
        if parsed_cost is None or parsed_cost > MAX_COST:
            problems.append({"loc": ["query", "cost"], "msg": f"an integer 0-{MAX_COST}"})
        else:
            cost = parsed_cost
    raw_position = query.get("min_position")
    min_position = None
    if raw_position is not None:
        min_position = ascii_integer(raw_position)
        if min_position is None:
            problems.append({"loc": ["query", "min_position"], "msg": "a log position"})
    if problems:
        raise KeyledgerError("validation_error", "the query parameters are invalid", problems)
    requirements = Requirements(
        origin=request.headers.get("Origin"),
        resource=query.get("resource"),
        scopes=scopes,
        environment=environment,
        ip=client_address(
            request.remote,
            request.headers.getall("X-Forwarded-For", []),
            request.headers.get("X-Real-IP"),
            request.app[SETTINGS].trusted_proxy_networks,
        ),
        cost=cost,
    )
    return requirements, min_position


def _forwarded_credential(request: web.Request) -> Credential | None:
    """The customer's credential from the proxied request's headers, if any."""
    headers = request.headers
    try:
        token = bearer_token(credential_header(headers, "Authorization"))
        key_id, signature = (
            credential_header(headers, "X-API-Key"),
            credential_header(headers, "X-API-Signature"),
        )
    except KeyledgerError:
        return None  # two credentials: MALFORMED (401), whichever the proxy would pick
    if token:
        return token
    if key_id is None or signature is None:
        return None
    # The body is not forwarded to an auth subrequest: it counts as absent.
    return SignedRequest(
        key_id=key_id,
        signature=signature,
        method=headers.get("X-Forwarded-Method", ""),
        path=headers.get("X-Forwarded-Uri", ""),
        timestamp=headers.get("X-API-Timestamp"),
    )
