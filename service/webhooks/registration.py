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

Both honour ``Idempotency-Key`` as every command does
(docs/api.md#idempotency-key), in the same memory (``service.store.idempotency``)
and in the same transaction as the append, so a retry after a lost answer never
registers a second endpoint: a retry with the same request answers the first
answer again (the endpoint as it was then; for a registration, without the
signing secret, which is never stored in the clear), another request is 422
``idempotency_key_reused``. Only a success is remembered.
"""

from __future__ import annotations

import functools
import secrets
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
from service.store.idempotency import StoredAnswer
from service.webhooks.endpoints import WebhookEndpoints, new_webhook_id, project

if TYPE_CHECKING:
    import asyncpg

    from service.key_commands import KeyCommandHandler
    from service.key_lifecycle import Issuer

SECRET_PREFIX = "whsec_"
_REGISTERED, _ANSWERED = 201, 200


@dataclass(frozen=True, slots=True)
class WebhookOutcome:
    """What registering or removing an endpoint answers: the endpoint as callers see it
    (``Endpoint.public``), and, for the first answer to a registration only, its secret."""

    webhook: dict[str, Any]
    registered: bool
    # The log position of the event written (or, when nothing was, of the endpoint's last):
    # a min_position for reads, as every command answers.
    position: int
    secret: str | None = None
    replayed: bool = False

    @property
    def status(self) -> int:
        """201 for a registration (first answer or replay), else 200."""
        return _REGISTERED if self.registered else _ANSWERED

    def answer(self) -> dict[str, Any]:
        """The answer as callers get it; a replayed registration's ``secret`` is null."""
        body: dict[str, Any] = {"webhook": self.webhook, "position": self.position}
        if self.registered:
            body["secret"] = self.secret
        if self.replayed:
            body["replayed"] = True
        return body

    def remembered(self, fingerprint: str) -> StoredAnswer:
        """This outcome as kept for retries: never the secret."""
        return StoredAnswer(
            fingerprint, self.status, {"webhook": self.webhook, "position": self.position}
        )

    @staticmethod
    def replay(stored: StoredAnswer, fingerprint: str) -> WebhookOutcome:
        """The first outcome again, for a retry sent with ``fingerprint`` (422
        ``idempotency_key_reused`` if it was another request)."""
        answer = stored.replayed(fingerprint, "webhook")
        return WebhookOutcome(
            answer["webhook"],
            stored.status == _REGISTERED,
            # Answers remembered before they carried a position: 0, reached by any read.
            position=answer.get("position", 0),
            replayed=True,
        )


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
    ) -> WebhookOutcome:
        """A new endpoint and its signing secret (the only time it is handed out), or
        the first answer again for a retry with the same ``Idempotency-Key``."""
        webhook_id = new_webhook_id()
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        command = RegisterWebhook(issuer.org_id, webhook_id, url, event_types, utc_now())
        return await self._run(issuer, command, secret)

    async def remove(self, issuer: Issuer, webhook_id: str) -> WebhookOutcome:
        """Remove the endpoint (a second removal changes nothing); 404 if the org has none."""
        return await self._run(issuer, RemoveWebhook(issuer.org_id, webhook_id, utc_now()))

    async def _run(
        self, issuer: Issuer, command: WebhookCommand, secret: str | None = None
    ) -> WebhookOutcome:
        record = functools.partial(self._record, issuer, command, secret)
        return await self.handler.append_alone(issuer.caller, command.issued_at, record)

    async def _record(
        self,
        issuer: Issuer,
        command: WebhookCommand,
        secret: str | None,
        conn: asyncpg.Connection,
        head: LogHead,
    ) -> tuple[WebhookOutcome, list[Envelope]]:
        store, idempotent = self.handler.store, issuer.idempotent
        if idempotent is not None:
            stored = await self.handler.idempotency.find_answer(
                conn, issuer.actor.id, idempotent.key
            )
            if stored is not None:
                return WebhookOutcome.replay(stored, idempotent.fingerprint), []
        state, last_position = await self._state(conn, command.webhook_id)
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
        registered = isinstance(command, RegisterWebhook)
        position = sealed[-1].position if sealed else last_position or head.position
        outcome = WebhookOutcome(
            endpoint.public(), registered, position, secret if registered else None
        )
        if idempotent is not None:
            # In the append's transaction: remembered if and only if it was recorded.
            await self.handler.idempotency.remember_answer(
                conn, issuer.actor.id, idempotent.key, outcome.remembered(idempotent.fingerprint)
            )
        return outcome, sealed

    async def _state(
        self, conn: asyncpg.Connection, webhook_id: str
    ) -> tuple[WebhookState | None, int | None]:
        """The endpoint folded from its stream (from its row, for one registered before
        endpoints had events), and its last event's position; None without a row or
        events; 409 ``webhook_quarantined`` if its stream does not fold."""
        endpoint = await self.endpoints.find(conn, webhook_id)
        if endpoint is None:
            # A new id; or one whose row and sealed secret are gone (a log repaired from
            # NATS gets its events back, never a secret): nothing to deliver with either.
            return None, None
        try:
            stream = await self.handler.store.load_stream(conn, webhook_id)
            start = endpoint.state_before_events(has_events=bool(stream))
            state = fold_own_stream(stream, _evolve, start)
            return state, stream[-1].position if stream else None
        except UnfoldableStream as exc:
            raise KeyledgerError(
                "webhook_quarantined",
                "this webhook's events cannot be read; it takes no changes",
                {"position": exc.position},
            ) from None
