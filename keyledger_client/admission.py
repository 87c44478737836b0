"""What a protected service decides about each request, whatever its framework.

``keyledger_client.aiohttp`` and ``keyledger_client.asgi`` only translate between their
framework and a ``Gate``: the key is the ``Authorization: Bearer …`` secret, verified
with the request's ``Origin`` and the gate's requirements; a refusal is answered with
the verdict's status (401, 403, or 429 with ``Retry-After``) and
``{"error": {"code", "message"}}``, and nothing about the key.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from keyledger_client.client import KeyledgerClient
from keyledger_client.models import VerifyResult

# The one message of every refusal: the code says why, and nothing says more about the key.
REFUSED = "the API key was refused"


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

    @property
    def body(self) -> bytes:
        """``{"error": {"code", "message"}}`` as JSON."""
        return json.dumps({"error": {"code": self.code, "message": REFUSED}}).encode()

    @property
    def headers(self) -> dict[str, str]:
        """``Content-Type``, and ``Retry-After`` when the verdict says when to come back."""
        headers = {"Content-Type": "application/json; charset=utf-8"}
        if self.retry_after is not None:
            headers["Retry-After"] = str(self.retry_after)
        return headers


# A request without a bearer secret is refused as keyledger refuses a malformed key.
NO_BEARER_SECRET = Refusal("MALFORMED", 401)


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
        result = await self.verifier.verify(
            secret,
            scopes=self.scopes,
            origin=origin,
            resource=self.resource,
            environment=self.environment,
        )
        if not result.valid:
            return Refusal(result.code, result.http_status, result.retry_after)
        return result
