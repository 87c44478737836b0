"""``KeyledgerClient``: the keyledger HTTP API from asyncio, one method per endpoint.

    async with KeyledgerClient("https://keyledger.internal", service_key) as kl:
        made = await kl.generate_key("acme", name="Trading Bot", type="secret")
        async for key in kl.list_keys("acme", status="active"):
            ...

Every command carries an ``Idempotency-Key``, so the client sends it again after
a connection error, a 429 or a 502-504 (waiting as ``Retry-After`` says, else
with jittered exponential backoff) without ever applying it twice. Refusals
raise ``KeyledgerAPIError``.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from keyledger_client import calls
from keyledger_client.calls import Call, Cursor, Page, Reply
from keyledger_client.errors import KeyledgerTransportError
from keyledger_client.events.vocabulary import Environment, KeyType, RevokeReason
from keyledger_client.models import (
    AuthorizeResult,
    BulkRevocation,
    ChainReport,
    CommandResult,
    Delivery,
    Granularity,
    Identity,
    IdentityResult,
    Key,
    KeyUsage,
    LogEntry,
    Me,
    UsageRecorded,
    VerifyResult,
    Webhook,
    WebhookResult,
)
from keyledger_client.retries import RetryPolicy

T = TypeVar("T")
USER_AGENT = "keyledger-client-python/0.1"


def reply_of(response: httpx.Response) -> Reply:
    """The parts of an httpx response the parsers read (JSON body or None)."""
    try:
        body = response.json() if response.content else None
    except ValueError:
        body = None
    return Reply(response.status_code, response.headers, body)


def request_headers(own: Mapping[str, str], call: Call[Any]) -> dict[str, str]:
    """The client's headers under the call's own; ``/v1/authorize`` carries the service key
    in ``X-Keyledger-Service-Key``, its ``Authorization`` being the customer's."""
    if "X-Keyledger-Service-Key" in call.headers:
        own = {name: value for name, value in own.items() if name != "Authorization"}
    return {**own, **call.headers}


def _reason(error: httpx.TransportError) -> str:
    """What went wrong, in words that quote nothing of the request."""
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    if isinstance(error, httpx.LocalProtocolError):
        return "the request could not be sent (a header value is not valid HTTP)"
    if isinstance(error, httpx.UnsupportedProtocol):
        return "the URL's scheme is not http or https"
    if isinstance(error, httpx.RemoteProtocolError):
        return "the server broke the HTTP exchange"
    if isinstance(error, httpx.ProxyError):
        return "the proxy refused the connection"
    if isinstance(error, httpx.ConnectError) and str(error):
        # The socket's own words ("[Errno 111] Connection refused"): nothing of the request.
        return f"the connection failed: {str(error)[:200]}"
    return "the connection failed or was cut"


def outcome(call: Call[T], reply: Reply) -> T:
    """The call's result, or its ``KeyledgerAPIError``."""
    if reply.status in call.answers:
        return call.parse(reply)
    raise calls.api_error(reply)


# A service key as keyledger reads one: 1-1024 printable ASCII characters, no space.
_SERVICE_KEY = re.compile(r"[\x21-\x7e]{1,1024}")
# Errors no retry can mend: the request itself cannot be sent (a header, the URL's scheme).
_NOT_RETRIED = (httpx.LocalProtocolError, httpx.UnsupportedProtocol)


def checked_service_key(service_key: str) -> str:
    """``service_key`` if keyledger could read it; ValueError (never quoting it) if not."""
    if not _SERVICE_KEY.fullmatch(service_key or ""):  # None too: an unset variable
        raise ValueError(
            "service_key must be 1-1024 printable ASCII characters without spaces or "
            f"line breaks (got {len(service_key or '')} characters: a trailing newline "
            "from a file, or an unset variable?)"
        )
    return service_key


def host_of(base_url: str) -> str:
    """The host and port of ``base_url``, as errors name it (never a user or password)."""
    try:
        return httpx.URL(base_url).netloc.decode("ascii", "replace") or "(no host)"
    except httpx.InvalidURL:
        return "(not a URL)"


class Connection:
    """What both clients hold: where keyledger is, as whom they call it, how they retry."""

    def __init__(self, base_url: str, service_key: str, retry: RetryPolicy | None) -> None:
        self.base_url = base_url.rstrip("/")
        self.host = host_of(self.base_url)
        self.service_key = checked_service_key(service_key)
        self.retry = retry or RetryPolicy()
        self._headers = {"Authorization": f"Bearer {service_key}", "User-Agent": USER_AGENT}

    def retries(self, error: httpx.TransportError, attempt: int) -> bool:
        """Whether a call that failed with ``error`` at attempt ``attempt`` is sent again."""
        return not isinstance(error, _NOT_RETRIED) and self.retry.after(attempt, None) is not None

    def transport_error(self, error: httpx.TransportError, attempt: int) -> KeyledgerTransportError:
        """``error`` as the client raises it: the host and the cause, never a header value
        (httpx's text for a refused header quotes it, the service key included)."""
        cause = type(error).__name__
        return KeyledgerTransportError(self.host, cause, _reason(error), attempt + 1)

    def request_of(self, call: Call[Any]) -> dict[str, Any]:
        """The arguments of ``httpx``'s ``request`` for ``call``."""
        return {
            "method": call.method,
            "url": self.base_url + call.path,
            "params": call.params or None,
            "json": call.json,
            "headers": request_headers(self._headers, call),
        }


class KeyledgerClient(Connection):
    """The async client. ``http`` may be your own ``httpx.AsyncClient`` (tests, proxies)."""

    def __init__(
        self,
        base_url: str,
        service_key: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http: httpx.AsyncClient | None = None,
    ) -> None:
        super().__init__(base_url, service_key, retry)
        self._http = http or httpx.AsyncClient(timeout=timeout)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connections."""
        await self._http.aclose()

    async def send(self, call: Call[T]) -> T:
        """Send one call, again after a transient failure (``RetryPolicy``), and read its answer."""
        attempt = 0
        while True:
            reply: Reply | None = None
            failure: KeyledgerTransportError | None = None
            try:
                reply = reply_of(await self._http.request(**self.request_of(call)))
            except httpx.TransportError as error:
                if not self.retries(error, attempt):
                    failure = self.transport_error(error, attempt)
            if failure is not None:
                raise failure  # outside the except: not even __context__ keeps httpx's text
            delay = self.retry.after(attempt, reply)
            if delay is None and reply is not None:
                return outcome(call, reply)
            await asyncio.sleep(delay or 0.0)
            attempt += 1

    async def _pages(self, page: Callable[[Cursor], Call[Page[T]]]) -> AsyncIterator[T]:
        cursor: Cursor = None
        while True:
            found = await self.send(page(cursor))
            for item in found.items:
                yield item
            if found.next_cursor is None:
                return
            cursor = found.next_cursor

    # -- commands -----------------------------------------------------------------

    async def generate_key(
        self, org_id: str, *, name: str, type: KeyType, **fields: Any
    ) -> CommandResult:
        """``POST /v1/orgs/{org}/keys``: a new key; ``.secret`` / ``.private_key`` once.

        ``fields``: the body's other fields (``environment``, ``scopes``, ``expires_in``…)
        and the command options ``idempotency_key``, ``if_match``, ``on_behalf_of``."""
        body, options = split_options({"name": name, "type": type, **fields})
        body = calls.without_none(body)
        return await self.send(calls.command(calls.keys_path(org_id), body, **options))

    async def rename_key(
        self, org_id: str, key_id: str, name: str, **options: Any
    ) -> CommandResult:
        """``POST …/keys/{id}/rename``."""
        path = calls.keys_path(org_id, key_id, "rename")
        return await self.send(calls.command(path, {"name": name}, **options))

    async def disable_key(
        self, org_id: str, key_id: str, reason: str | None = None, **options: Any
    ) -> CommandResult:
        """``POST …/keys/{id}/disable`` (reversible)."""
        path = calls.keys_path(org_id, key_id, "disable")
        return await self.send(
            calls.command(path, calls.without_none({"reason": reason}), **options)
        )

    async def enable_key(self, org_id: str, key_id: str, **options: Any) -> CommandResult:
        """``POST …/keys/{id}/enable``."""
        path = calls.keys_path(org_id, key_id, "enable")
        return await self.send(calls.command(path, None, **options))

    async def revoke_key(
        self, org_id: str, key_id: str, reason: RevokeReason, **options: Any
    ) -> CommandResult:
        """``POST …/keys/{id}/revoke`` (terminal)."""
        path = calls.keys_path(org_id, key_id, "revoke")
        return await self.send(calls.command(path, {"reason": reason}, **options))

    async def rotate_key(
        self, org_id: str, key_id: str, grace_period: str | None = None, **options: Any
    ) -> CommandResult:
        """``POST …/keys/{id}/rotate``: a new secret; the old one verifies for ``grace_period``."""
        path = calls.keys_path(org_id, key_id, "rotate")
        body = calls.without_none({"grace_period": grace_period})
        return await self.send(calls.command(path, body, **options))

    async def update_key(self, org_id: str, key_id: str, **fields: Any) -> CommandResult:
        """``PATCH /v1/orgs/{org}/keys/{id}``: change the aspects given (``scopes``,
        ``metadata``, ``rate_limits``, ``credits``, ``allowed_origins``, ``allowed_cidrs``,
        ``expires_at``, ``identity_id``, ``name``); None clears one that may be cleared.
        ``if_match=version`` refuses the change (409) if the key moved on meanwhile."""
        changes, options = split_options(fields)
        return await self.send(calls.update_key(org_id, key_id, json_ready(changes), **options))

    async def revoke_keys(
        self,
        org_id: str,
        reason: RevokeReason,
        *,
        key_ids: Sequence[str] | None = None,
        created_by: str | None = None,
        all: bool | None = None,
        environment: Environment | None = None,
        **options: Any,
    ) -> BulkRevocation:
        """``POST /v1/orgs/{org}/revocations``: revoke, in one transaction, the keys named
        by exactly one of ``key_ids``, ``created_by`` (an actor id) or ``all=True``."""
        selection = {
            "key_ids": list(key_ids) if key_ids is not None else None,
            "created_by": created_by,
            "all": all,
            "environment": environment,
        }
        return await self.send(calls.revoke_keys(org_id, reason, selection, **options))

    async def configure_identity(
        self,
        org_id: str,
        identity_id: str,
        rate_limits: Sequence[Mapping[str, Any]],
        metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> IdentityResult:
        """``PUT /v1/orgs/{org}/identities/{id}``: set (create or replace) the rate limits
        shared by every key of the identity, and its metadata."""
        return await self.send(
            calls.configure_identity(org_id, identity_id, rate_limits, metadata, **options)
        )

    async def register_webhook(
        self, org_id: str, url: str, event_types: Sequence[str] | None = None, **options: Any
    ) -> WebhookResult:
        """``POST /v1/orgs/{org}/webhooks``: a new endpoint (every event type but the
        endpoints' own, or ``event_types``); ``.secret`` once. A retry, by this client or
        with your ``idempotency_key``, answers the same endpoint (``.secret`` None)."""
        return await self.send(calls.register_webhook(org_id, url, event_types, **options))

    async def remove_webhook(self, org_id: str, webhook_id: str, **options: Any) -> WebhookResult:
        """``DELETE /v1/orgs/{org}/webhooks/{id}`` (removing it again changes nothing)."""
        return await self.send(calls.remove_webhook(org_id, webhook_id, **options))

    # -- reads --------------------------------------------------------------------

    async def get_key(self, org_id: str, key_id: str, min_position: int | None = None) -> Key:
        """``GET /v1/orgs/{org}/keys/{id}``."""
        return await self.send(calls.get_key(org_id, key_id, min_position))

    def list_keys(self, org_id: str, **filters: Any) -> AsyncIterator[Key]:
        """Every key of ``org_id``, newest first, page after page (``status``, ``type``,
        ``environment``, ``limit`` per page, ``min_position``)."""
        return self._pages(lambda cursor: calls.key_page(org_id, filters, cursor))

    async def key_events(
        self, org_id: str, key_id: str, min_position: int | None = None
    ) -> list[LogEntry]:
        """``GET …/keys/{id}/events``: the key's history, in stream order."""
        return await self.send(calls.key_events(org_id, key_id, min_position))

    def audit(self, **filters: Any) -> AsyncIterator[LogEntry]:
        """Every event matching ``filters`` (``org_id``, ``key_id``, ``event_type``, ``actor``,
        ``since``, ``until``, ``limit`` per page) in position order, page after page."""
        return self._pages(lambda cursor: calls.audit_page(filters, cursor))

    async def audit_verify(self) -> ChainReport:
        """``GET /v1/audit/verify``: walk the hash chain."""
        return await self.send(calls.audit_verify())

    async def get_identity(self, org_id: str, identity_id: str) -> Identity:
        """``GET /v1/orgs/{org}/identities/{id}``."""
        return await self.send(calls.get_identity(org_id, identity_id))

    async def list_webhooks(self, org_id: str) -> list[Webhook]:
        """``GET /v1/orgs/{org}/webhooks``: the endpoints not removed, newest first."""
        return await self.send(calls.list_webhooks(org_id))

    async def get_webhook(self, org_id: str, webhook_id: str) -> Webhook:
        """``GET /v1/orgs/{org}/webhooks/{id}`` (a removed endpoint too)."""
        return await self.send(calls.get_webhook(org_id, webhook_id))

    def webhook_deliveries(
        self, org_id: str, webhook_id: str, *, limit: int | None = None
    ) -> AsyncIterator[Delivery]:
        """Every delivery attempt at the endpoint, newest first, page after page (``limit``)."""
        return self._pages(lambda before: calls.delivery_page(org_id, webhook_id, limit, before))

    async def key_usage(
        self,
        org_id: str,
        key_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        granularity: Granularity = "hour",
    ) -> KeyUsage:
        """``GET …/keys/{id}/usage``: verifications per bucket from ``since`` (default: a day,
        an hour or 30 days earlier) to ``until`` (default: now), both timezone-aware."""
        return await self.send(calls.key_usage(org_id, key_id, since, until, granularity))

    async def me(self) -> Me:
        """``GET /v1/me``: the service key this client calls with (id, scopes, orgs)."""
        return await self.send(calls.me())

    # -- verification -------------------------------------------------------------

    async def verify(self, **fields: Any) -> VerifyResult:
        """``POST /v1/verify``: ``key=…`` (bearer) or ``key_id=…, signature=…, method=…,
        path=…`` (signed), with ``scopes``, ``origin``, ``resource``, ``environment``…"""
        return await self.send(calls.verify(fields))

    async def authorize_headers(
        self, credential_headers: Mapping[str, str], **requirements: Any
    ) -> AuthorizeResult:
        """``GET /v1/authorize`` as a reverse proxy calls it: the customer's headers
        (``Authorization``, ``X-API-*``, ``Origin``, ``X-Forwarded-*``) and the location's
        ``scopes``, ``resource``, ``environment``."""
        return await self.send(calls.authorize(credential_headers, self.service_key, requirements))

    async def report_usage(self, uses: Mapping[str, datetime]) -> UsageRecorded:
        """``POST /v1/usage``: when each key was last seen in use outside keyledger."""
        return await self.send(calls.report_usage(uses))


_OPTIONS = ("idempotency_key", "if_match", "on_behalf_of")


def split_options(fields: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A command's body fields, and its options (sent as headers)."""
    body = {k: v for k, v in fields.items() if k not in _OPTIONS}
    return body, {k: v for k, v in fields.items() if k in _OPTIONS}


def json_ready(changes: Mapping[str, Any]) -> dict[str, Any]:
    """``changes`` as JSON carries them: a ``datetime`` as ISO 8601 text."""
    return {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in changes.items()
    }
