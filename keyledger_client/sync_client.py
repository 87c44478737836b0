"""``SyncKeyledgerClient``: the same API as ``KeyledgerClient``, for code without asyncio.

Each method sends the same ``Call`` (``keyledger_client.calls``) as its async twin,
with the same retries and errors; lists are plain iterators over every page.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx

from keyledger_client import calls
from keyledger_client.calls import Call, Cursor, Page, Reply
from keyledger_client.client import (
    Connection,
    json_ready,
    outcome,
    reply_of,
    split_options,
)
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


class SyncKeyledgerClient(Connection):
    """The blocking client. ``http`` may be your own ``httpx.Client``."""

    def __init__(
        self,
        base_url: str,
        service_key: str,
        *,
        timeout: float = 10.0,
        retry: RetryPolicy | None = None,
        http: httpx.Client | None = None,
    ) -> None:
        super().__init__(base_url, service_key, retry)
        self._http = http or httpx.Client(timeout=timeout)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connections."""
        self._http.close()

    def send(self, call: Call[T]) -> T:
        """Send one call, again after a transient failure (``RetryPolicy``), and read its answer."""
        attempt = 0
        while True:
            reply: Reply | None = None
            failure: KeyledgerTransportError | None = None
            try:
                reply = reply_of(self._http.request(**self.request_of(call)))
            except httpx.TransportError as error:
                if not self.retries(error, attempt):
                    failure = self.transport_error(error, attempt)
            if failure is not None:
                raise failure  # outside the except: not even __context__ keeps httpx's text
            delay = self.retry.after(attempt, reply)
            if delay is None and reply is not None:
                return outcome(call, reply)
            time.sleep(delay or 0.0)
            attempt += 1

    def _pages(self, page: Callable[[Cursor], Call[Page[T]]]) -> Iterator[T]:
        cursor: Cursor = None
        while True:
            found = self.send(page(cursor))
            yield from found.items
            if found.next_cursor is None:
                return
            cursor = found.next_cursor

    # -- commands -----------------------------------------------------------------

    def generate_key(
        self, org_id: str, *, name: str, type: KeyType, **fields: Any
    ) -> CommandResult:
        """``POST /v1/orgs/{org}/keys`` (see ``KeyledgerClient.generate_key``)."""
        body, options = split_options({"name": name, "type": type, **fields})
        body = calls.without_none(body)
        return self.send(calls.command(calls.keys_path(org_id), body, **options))

    def rename_key(self, org_id: str, key_id: str, name: str, **options: Any) -> CommandResult:
        """``POST …/keys/{id}/rename``."""
        path = calls.keys_path(org_id, key_id, "rename")
        return self.send(calls.command(path, {"name": name}, **options))

    def disable_key(
        self, org_id: str, key_id: str, reason: str | None = None, **options: Any
    ) -> CommandResult:
        """``POST …/keys/{id}/disable``."""
        path = calls.keys_path(org_id, key_id, "disable")
        return self.send(calls.command(path, calls.without_none({"reason": reason}), **options))

    def enable_key(self, org_id: str, key_id: str, **options: Any) -> CommandResult:
        """``POST …/keys/{id}/enable``."""
        return self.send(calls.command(calls.keys_path(org_id, key_id, "enable"), None, **options))

    def revoke_key(
        self, org_id: str, key_id: str, reason: RevokeReason, **options: Any
    ) -> CommandResult:
        """``POST …/keys/{id}/revoke``."""
        path = calls.keys_path(org_id, key_id, "revoke")
        return self.send(calls.command(path, {"reason": reason}, **options))

    def rotate_key(
        self, org_id: str, key_id: str, grace_period: str | None = None, **options: Any
    ) -> CommandResult:
        """``POST …/keys/{id}/rotate``."""
        path = calls.keys_path(org_id, key_id, "rotate")
        body = calls.without_none({"grace_period": grace_period})
        return self.send(calls.command(path, body, **options))

    def update_key(self, org_id: str, key_id: str, **fields: Any) -> CommandResult:
        """``PATCH /v1/orgs/{org}/keys/{id}``: change the aspects given (``scopes``,
        ``metadata``, ``rate_limits``, ``credits``, ``allowed_origins``, ``allowed_cidrs``,
        ``expires_at``, ``identity_id``, ``name``); None clears one that may be cleared.
        ``if_match=version`` refuses the change (409) if the key moved on meanwhile."""
        changes, options = split_options(fields)
        return self.send(calls.update_key(org_id, key_id, json_ready(changes), **options))

    def revoke_keys(
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
        return self.send(calls.revoke_keys(org_id, reason, selection, **options))

    def configure_identity(
        self,
        org_id: str,
        identity_id: str,
        rate_limits: Sequence[Mapping[str, Any]],
        metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> IdentityResult:
        """``PUT /v1/orgs/{org}/identities/{id}``: set (create or replace) the rate limits
        shared by every key of the identity, and its metadata."""
        return self.send(
            calls.configure_identity(org_id, identity_id, rate_limits, metadata, **options)
        )

    def register_webhook(
        self, org_id: str, url: str, event_types: Sequence[str] | None = None, **options: Any
    ) -> WebhookResult:
        """``POST /v1/orgs/{org}/webhooks``: a new endpoint (every event type but the
        endpoints' own, or ``event_types``); ``.secret`` once. A retry, by this client or
        with your ``idempotency_key``, answers the same endpoint (``.secret`` None)."""
        return self.send(calls.register_webhook(org_id, url, event_types, **options))

    def remove_webhook(self, org_id: str, webhook_id: str, **options: Any) -> WebhookResult:
        """``DELETE /v1/orgs/{org}/webhooks/{id}`` (removing it again changes nothing)."""
        return self.send(calls.remove_webhook(org_id, webhook_id, **options))

    # -- reads --------------------------------------------------------------------

    def get_key(self, org_id: str, key_id: str, min_position: int | None = None) -> Key:
        """``GET /v1/orgs/{org}/keys/{id}``."""
        return self.send(calls.get_key(org_id, key_id, min_position))

    def list_keys(self, org_id: str, **filters: Any) -> Iterator[Key]:
        """Every key of ``org_id``, newest first, page after page."""
        return self._pages(lambda cursor: calls.key_page(org_id, filters, cursor))

    def key_events(
        self, org_id: str, key_id: str, min_position: int | None = None
    ) -> list[LogEntry]:
        """``GET …/keys/{id}/events``."""
        return self.send(calls.key_events(org_id, key_id, min_position))

    def audit(self, **filters: Any) -> Iterator[LogEntry]:
        """Every event matching ``filters``, in position order, page after page."""
        return self._pages(lambda cursor: calls.audit_page(filters, cursor))

    def audit_verify(self) -> ChainReport:
        """``GET /v1/audit/verify``."""
        return self.send(calls.audit_verify())

    def get_identity(self, org_id: str, identity_id: str) -> Identity:
        """``GET /v1/orgs/{org}/identities/{id}``."""
        return self.send(calls.get_identity(org_id, identity_id))

    def list_webhooks(self, org_id: str) -> list[Webhook]:
        """``GET /v1/orgs/{org}/webhooks``: the endpoints not removed, newest first."""
        return self.send(calls.list_webhooks(org_id))

    def get_webhook(self, org_id: str, webhook_id: str) -> Webhook:
        """``GET /v1/orgs/{org}/webhooks/{id}`` (a removed endpoint too)."""
        return self.send(calls.get_webhook(org_id, webhook_id))

    def webhook_deliveries(
        self, org_id: str, webhook_id: str, *, limit: int | None = None
    ) -> Iterator[Delivery]:
        """Every delivery attempt at the endpoint, newest first, page after page (``limit``)."""
        return self._pages(lambda before: calls.delivery_page(org_id, webhook_id, limit, before))

    def key_usage(
        self,
        org_id: str,
        key_id: str,
        since: datetime | None = None,
        until: datetime | None = None,
        granularity: Granularity = "hour",
    ) -> KeyUsage:
        """``GET …/keys/{id}/usage``: verifications per bucket from ``since`` (default: a day,
        an hour or 30 days earlier) to ``until`` (default: now), both timezone-aware."""
        return self.send(calls.key_usage(org_id, key_id, since, until, granularity))

    def me(self) -> Me:
        """``GET /v1/me``: the service key this client calls with (id, scopes, orgs)."""
        return self.send(calls.me())

    # -- verification -------------------------------------------------------------

    def verify(self, **fields: Any) -> VerifyResult:
        """``POST /v1/verify`` (see ``KeyledgerClient.verify``)."""
        return self.send(calls.verify(fields))

    def authorize_headers(
        self, credential_headers: Mapping[str, str], **requirements: Any
    ) -> AuthorizeResult:
        """``GET /v1/authorize`` as a reverse proxy calls it."""
        return self.send(calls.authorize(credential_headers, self.service_key, requirements))

    def report_usage(self, uses: Mapping[str, datetime]) -> UsageRecorded:
        """``POST /v1/usage``."""
        return self.send(calls.report_usage(uses))
