"""What a protected service decides about each request, whatever its framework.

``keyledger_client.aiohttp`` and ``keyledger_client.asgi`` only translate between their
framework and a ``Gate``: the key is the ``Authorization: Bearer …`` secret, verified
with the request's ``Origin`` and the gate's requirements; a refusal is answered with
the verdict's status (401, 403, or 429 with ``Retry-After``) and
``{"error": {"code", "message"}}``, and nothing about the key. When no verdict can be
had (keyledger unreachable, or refusing the service's own key) the request is refused
too, 503 ``verifier_unavailable`` with ``Retry-After``: the gate fails closed.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from keyledger_client.client import KeyledgerClient
from keyledger_client.errors import KeyledgerAPIError, KeyledgerError
from keyledger_client.models import VerifyResult

# The one message of every refusal: the code says why, and nothing says more about the key.
REFUSED = "the API key was refused"
# When keyledger could not give a verdict: nobody is let in, and the caller may come back.
VERIFIER_UNAVAILABLE = "verifier_unavailable"
UNAVAILABLE = "the API key could not be verified right now; try again later"

log = logging.getLogger(__name__)


class Verifies(Protocol):
    """``LocalVerifier`` or anything verifying a bearer secret the same way."""

    async def verify(
        self,
        secret: str,
        *,
        scopes: Sequence[str] = (),
        origin: str | None = None,
        resource: str | None = None,
        environment: str | None = None,
    ) -> VerifyResult: ...


class RemoteVerifier:
    """A ``KeyledgerClient`` as a verifier: every request asks keyledger (``POST /v1/verify``),
    no cache and no NATS connection."""

    def __init__(self, client: KeyledgerClient) -> None:
        self.client = client

    async def verify(
        self,
        secret: str,
        *,
        scopes: Sequence[str] = (),
        origin: str | None = None,
        resource: str | None = None,
        environment: str | None = None,
    ) -> VerifyResult:
        """The verdict on ``secret``, as ``KeyledgerClient.verify`` answers it."""
        return await self.client.verify(
            key=secret,
            scopes=list(scopes) or None,
            origin=origin,
            resource=resource,
            environment=environment,
        )


def bearer_secret(authorization: str | None) -> str | None:
    """The secret of an ``Authorization: Bearer …`` header, or None."""
    scheme, _, token = (authorization or "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None


@dataclass(frozen=True, slots=True)
class Refusal:
    """The answer to a refused request: the verdict's code and status, nothing about the key."""

    code: str
    status: int
    retry_after: int | None = None
    message: str = REFUSED
    # ``WWW-Authenticate: Bearer``: the request carried no bearer credentials at all.
    challenge: bool = False

    @property
    def body(self) -> bytes:
        """``{"error": {"code", "message"}}`` as JSON."""
        return json.dumps({"error": {"code": self.code, "message": self.message}}).encode()

    @property
    def headers(self) -> dict[str, str]:
        """``Content-Type``, ``Retry-After`` when the caller is told when to come back, and
        ``WWW-Authenticate`` when it sent no bearer key."""
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        if self.challenge:
            headers["WWW-Authenticate"] = "Bearer"
        return headers


# A request without a bearer secret is refused as keyledger refuses a malformed key,
# with the challenge RFC 6750 asks of a 401 to a request that carried no credentials.
NO_BEARER_SECRET = Refusal("MALFORMED", 401, challenge=True)
# When keyledger gave no verdict, how long the caller is asked to wait (unless it said).
UNAVAILABLE_RETRY_AFTER = 5


def unavailable(error: KeyledgerError) -> Refusal:
    """The refusal when no verdict could be had (keyledger unreachable, or refusing this
    service's own key): 503, fail closed. One log line says why; the error never quotes
    a secret (``KeyledgerError``'s contract), and the caller learns nothing of it."""
    log.error(
        "keyledger_verifier_unavailable: %s",
        error,
        extra={"error": str(error), "error_type": type(error).__name__},
    )
    wait = error.retry_after if isinstance(error, KeyledgerAPIError) else None
    retry_after = max(1, math.ceil(wait)) if wait is not None else UNAVAILABLE_RETRY_AFTER
    return Refusal(VERIFIER_UNAVAILABLE, 503, retry_after, UNAVAILABLE)


@dataclass(frozen=True, slots=True)
class Gate:
    """A verifier and what a request's key must satisfy to pass."""

    verifier: Verifies
    scopes: tuple[str, ...] = ()
    environment: str | None = None
    resource: str | None = None
    # Paths let through unchecked (e.g. ``/healthz``), compared with the request's path.
    exempt: frozenset[str] = frozenset()

    @classmethod
    def of(
        cls,
        verifier: Verifies | KeyledgerClient,
        *,
        scopes: Sequence[str] = (),
        environment: str | None = None,
        resource: str | None = None,
        exempt: Collection[str] = (),
    ) -> Gate:
        """The gate the middlewares' options describe; a bare client asks keyledger each time."""
        return cls(
            RemoteVerifier(verifier) if isinstance(verifier, KeyledgerClient) else verifier,
            tuple(scopes),
            environment,
            resource,
            frozenset(exempt),
        )

    def exempts(self, path: str) -> bool:
        """Whether a request for ``path`` passes without a key."""
        return path in self.exempt

    async def admit(self, authorization: str | None, origin: str | None) -> VerifyResult | Refusal:
        """The valid verdict letting the request through, or how to refuse it."""
        secret = bearer_secret(authorization)
        if secret is None:
            return NO_BEARER_SECRET
        try:
            result = await self.verifier.verify(
                secret,
                scopes=self.scopes,
                origin=origin,
                resource=self.resource,
                environment=self.environment,
            )
        except KeyledgerError as error:
            return unavailable(error)
        if not result.valid:
            return Refusal(result.code, result.http_status, result.retry_after)
        return result
