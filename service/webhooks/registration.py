"""The webhook endpoint use cases: register one (``POST``) and remove one (``DELETE``).

Both are commands like any other: decided by ``service.domain.webhooks`` and
appended to the one log (``WebhookRegistered``, ``WebhookRemoved``), in a
transaction of their own under the log's append lock, as an identity's are
(``service.identities``): the same bounded wait, the same re-check of the
calling service key, the same truncation guards, the same answer to a
database that fails (503, nothing written). The same transaction writes the
endpoint's projection (``webhook_endpoints``) and, at registration, its sealed
signing secret (``webhook_secrets``): the secret is never in the log. After
the commit the events reach this replica's observers (the verification
index, which ignores them, and the event stream) before the answer leaves;
the relay publishes them to NATS like any event.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from events.codec import to_domain_event
from events.models import Envelope, WebhookRegistered, WebhookRemoved
from service.clock import utc_now
from service.command_session import check_caller
from service.domain.webhooks import (
    RegisterWebhook,
    RemoveWebhook,
    WebhookCommand,
    WebhookState,
    decide_webhook,
    evolve_webhook,
)
from service.errors import KeyledgerError
from service.group_commit import error_for
from service.store.event_rows import UnfoldableStream, seal_after
from service.store.quarantine import is_transient
from service.webhooks.endpoints import Endpoint, WebhookEndpoints, new_webhook_id, project

if TYPE_CHECKING:
    import asyncpg

    from service.key_commands import KeyCommandHandler
    from service.key_lifecycle import Issuer

SECRET_PREFIX = "whsec_"


def fold_webhook_stream(
    envelopes: list[Envelope], state: WebhookState | None = None
) -> WebhookState | None:
    """An endpoint's state after ``envelopes`` of its stream (from ``state``);
    ``UnfoldableStream`` if one does not apply."""
    for envelope in envelopes:
        try:
            event = to_domain_event(envelope)
            if not isinstance(event, WebhookRegistered | WebhookRemoved):
                raise ValueError(f"{envelope.event_type} in a webhook endpoint's stream")
            state = evolve_webhook(state, event)
        except Exception as exc:
            if is_transient(exc):
                raise
            raise UnfoldableStream(
                envelope.key_id, envelope.org_id, envelope.position, envelope.event_type
            ) from None
    return state


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
        handler = self.handler
        if handler.write_guard is not None:
            handler.write_guard()
        try:
            async with handler.pool.acquire() as conn, conn.transaction():
                await handler.store.lock(conn, wait_seconds=handler.lock_timeout_seconds)
                appended = await self._record(conn, issuer, command, secret)
                endpoint = await self.endpoints.find(conn, command.webhook_id)
        except KeyledgerError:
            raise
        except Exception as exc:
            # The transaction rolled back: nothing of it was written.
            raise error_for(exc) from exc
        await handler.observe(appended)
        assert endpoint is not None  # registered, or found by the decider
        return endpoint

    async def _record(
        self,
        conn: asyncpg.Connection,
        issuer: Issuer,
        command: WebhookCommand,
        secret: str | None,
    ) -> list[Envelope]:
        handler = self.handler
        head = await handler.store.read_head(conn)
        if handler.head_guard is not None:
            handler.head_guard(head.position)
        if issuer.caller is not None:
            standings = await handler.registry.standings(conn, [issuer.caller.key_id])
            check_caller(standings.get(issuer.caller.key_id), issuer.caller, command.issued_at)
        state = await self._state(conn, command.webhook_id)
        events = decide_webhook(command, state)
        sealed = seal_after(
            events,
            actor=issuer.actor,
            expected_version=state.version if state else 0,
            position=head.position,
            previous_hash=head.hash,
        )
        if not sealed:
            return []
        await handler.store.insert_sealed(conn, sealed)
        for envelope in sealed:
            await project(conn, envelope)
        if secret is not None:
            await self.endpoints.keep_secret(conn, command.webhook_id, secret)
        await handler.store.notify(conn, sealed[-1].position)
        return sealed

    async def _state(self, conn: asyncpg.Connection, webhook_id: str) -> WebhookState | None:
        """The endpoint folded from its stream (from its row, for one registered before
        endpoints had events); 409 ``webhook_quarantined`` if its stream does not fold."""
        endpoint = await self.endpoints.find(conn, webhook_id)
        start = endpoint.state() if endpoint is not None and endpoint.position is None else None
        try:
            stream = await self.handler.store.load_stream(conn, webhook_id)
            return fold_webhook_stream(stream, start)
        except UnfoldableStream as exc:
            raise KeyledgerError(
                "webhook_quarantined",
                "this webhook's events cannot be read; it takes no changes",
                {"position": exc.position},
            ) from None
