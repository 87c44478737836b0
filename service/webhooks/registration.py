"""The webhook endpoint use cases: register one (``POST``) and remove one (``DELETE``).

Both are commands like any other: decided by ``service.domain.webhooks`` and
appended to the one log (``WebhookRegistered``, ``WebhookRemoved``), in a
transaction of their own under the log's append lock, as an identity's are
(``service.identities``), through ``KeyCommandHandler.append_alone``: the
same bounded wait, the same re-check of the calling service key, the same
truncation guards, the same answer to a database that fails (503, nothing
written). The same transaction writes the
endpoint's projection (``webhook_endpoints``) and, at registration, its sealed
signing secret (``webhook_secrets``): the secret is never in the log. After
the commit the events reach this replica's observers (the verification
index, which ignores them, and the event stream) before the answer leaves;
the relay publishes them to NATS like any event.
"""

from __future__ import annotations

import functools
import secrets
from typing import TYPE_CHECKING

from events.models import Envelope, LogEvent, WebhookRegistered, WebhookRemoved
from service.clock import utc_now
from service.domain.webhooks import (
    RegisterWebhook,
    RemoveWebhook,
    WebhookCommand,
    WebhookState,
    decide_webhook,
    evolve_webhook,
)
from service.errors import KeyledgerError
from service.store.event_rows import UnfoldableStream, fold_own_stream, seal_after
from service.store.event_store import LogHead
from service.webhooks.endpoints import Endpoint, WebhookEndpoints, new_webhook_id, project

if TYPE_CHECKING:
    import asyncpg

    from service.key_commands import KeyCommandHandler
    from service.key_lifecycle import Issuer

SECRET_PREFIX = "whsec_"


def _evolve(state: WebhookState | None, event: LogEvent) -> WebhookState:
    if not isinstance(event, WebhookRegistered | WebhookRemoved):
        raise ValueError(f"{event.event_type} in a webhook endpoint's stream")
    return evolve_webhook(state, event)


class WebhookRegistrations:
    """Register and remove endpoints through ``handler``'s pool and log."""

    def __init__(self, handler: KeyCommandHandler, endpoints: WebhookEndpoints) -> None:
        self.handler = handler
        self.endpoints = endpoints

    async def register(
        self, issuer: Issuer, url: str, event_types: tuple[str, ...]
    ) -> tuple[Endpoint, str]:
        """A new endpoint and its signing secret (the only time it is handed out)."""
        webhook_id = new_webhook_id()
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        command = RegisterWebhook(issuer.org_id, webhook_id, url, event_types, utc_now())
        return await self._run(issuer, command, secret), secret

    async def remove(self, issuer: Issuer, webhook_id: str) -> Endpoint:
        """Remove the endpoint (a second removal changes nothing); 404 if the org has none."""
        return await self._run(issuer, RemoveWebhook(issuer.org_id, webhook_id, utc_now()))

    async def _run(
        self, issuer: Issuer, command: WebhookCommand, secret: str | None = None
    ) -> Endpoint:
        record = functools.partial(self._record, issuer, command, secret)
        return await self.handler.append_alone(issuer.caller, command.issued_at, record)

    async def _record(
        self,
        issuer: Issuer,
        command: WebhookCommand,
        secret: str | None,
        conn: asyncpg.Connection,
        head: LogHead,
    ) -> tuple[Endpoint, list[Envelope]]:
        store = self.handler.store
        state = await self._state(conn, command.webhook_id)
        events = decide_webhook(command, state)
        sealed = seal_after(
            events,
            actor=issuer.actor,
            expected_version=state.version if state else 0,
            position=head.position,
            previous_hash=head.hash,
        )
        if sealed:
            await store.insert_sealed(conn, sealed)
            for envelope in sealed:
                await project(conn, envelope)
        if sealed and secret is not None:
            await self.endpoints.keep_secret(conn, command.webhook_id, secret)
        endpoint = await self.endpoints.find(conn, command.webhook_id)
        assert endpoint is not None  # registered now, or found by the decider
        return endpoint, sealed

    async def _state(self, conn: asyncpg.Connection, webhook_id: str) -> WebhookState | None:
        """The endpoint folded from its stream (from its row, for one registered before
        endpoints had events); None without a row; 409 ``webhook_quarantined`` if its
        stream does not fold."""
        endpoint = await self.endpoints.find(conn, webhook_id)
        if endpoint is None:
            # A new id; or one whose row and sealed secret are gone (a log repaired from
            # NATS gets its events back, never a secret): nothing to deliver with either.
            return None
        try:
            stream = await self.handler.store.load_stream(conn, webhook_id)
            start = endpoint.state_before_events(has_events=bool(stream))
            return fold_own_stream(stream, _evolve, start)
        except UnfoldableStream as exc:
            raise KeyledgerError(
                "webhook_quarantined",
                "this webhook's events cannot be read; it takes no changes",
                {"position": exc.position},
            ) from None
