"""Delivering events to webhook endpoints: one replica at a time, one durable consumer each.

Every replica runs a ``WebhookDispatcher``; the one holding a session
advisory lock (the leader) serves every endpoint, so a given endpoint is
never served by two replicas at once. Each endpoint is fed by its own
durable JetStream consumer (``webhook_<id>``, filtered on the endpoint's org)
that hands its events over one at a time, in log order.

Order is kept per key, not per endpoint: a failed delivery is retried later
(the message goes back to JetStream with the backoff's delay) and holds back
only the later events of the same key, which wait for it to be delivered or
dead-lettered; other keys' events go on meanwhile. Whether an earlier event
of the key is still unsettled is read from the log and the delivery attempts
(``DeliveryAttempts.earlier_unsettled``), never from the order JetStream
hands messages back in. Up to ``MAX_WAITING`` events of an endpoint may wait
so; beyond, JetStream holds the endpoint's later events too.

A delivery is acknowledged only after the receiver answered 2xx (or after
the event was dead-lettered); a leader that dies mid-delivery leaves the
message unacknowledged, and the next leader redelivers it with the same
``Keyledger-Event-Id`` (at least once). The events about endpoints
themselves (``WebhookRegistered``, ``WebhookRemoved``) are never delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

import asyncpg
import nats
import nats.errors
import nats.js.errors
import structlog
from cryptography.exceptions import InvalidTag
from nats.js import JetStreamContext

from events.codec import canonical_json
from events.models import Envelope, KeyEvent
from events.subjects import subject_filter
from events.subscriber import EventConsumer, RetryLater
from events.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, signature_header
from service.clock import utc_now
from service.event_stream import public_envelope
from service.outbox.relay import relay_consumer
from service.settings import Settings
from service.webhooks.attempts import Backoff, DeliveryAttempts
from service.webhooks.endpoints import Endpoint, WebhookEndpoints
from service.webhooks.receivers import refusal_before_sending
from service.webhooks.sender import WebhookSender

# pg_try_advisory_lock(classid, objid): classid "kw" (keyledger webhooks), objid the stream.
DISPATCHER_LOCK_CLASS = 0x6B77
CONSUMER_PREFIX = "webhook_"
# Events of one endpoint handed out but not settled: the failing ones and those of the same
# keys waiting behind them (JetStream's own default).
MAX_WAITING = 1000

log = structlog.get_logger(__name__)


def consumer_name(webhook_id: str) -> str:
    """The durable JetStream consumer that feeds endpoint ``webhook_id``."""
    return CONSUMER_PREFIX + webhook_id


class WebhookDispatcher:
    """Serves every registered endpoint while this replica holds the dispatcher lock."""

    def __init__(
        self, settings: Settings, endpoints: WebhookEndpoints, attempts: DeliveryAttempts
    ) -> None:
        self.settings = settings
        self.endpoints = endpoints
        self.attempts = attempts
        self.backoff = Backoff(
            settings.webhook_retry_base_seconds,
            settings.webhook_retry_max_seconds,
            settings.webhook_retry_for_seconds,
        )
        self.is_leader = False
        self._consumers: dict[str, tuple[EventConsumer, asyncio.Task[None]]] = {}
        self._secrets: dict[str, str] = {}
        self.sender = WebhookSender(settings.webhook_timeout_seconds)

    async def run(self) -> None:
        """Compete for the lock and serve while holding it, until cancelled."""
        while True:
            try:
                await self._lead()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook_dispatcher_failed", error=repr(exc))
            await asyncio.sleep(self.settings.webhook_refresh_seconds)

    async def _lead(self) -> None:
        conn = await asyncpg.connect(self.settings.database_url)
        try:
            await self._await_lock(conn)
            nc = await nats.connect(
                servers=self.settings.nats_servers,
                max_reconnect_attempts=-1,
                reconnect_time_wait=0.5,
            )
            self.sender.open()
            self.is_leader = True
            log.info("webhook_dispatcher_leader", stream=self.settings.nats_stream)
            try:
                await self._serve(conn, nc.jetstream())
            finally:
                self.is_leader = False
                await self._stop_consumers()
                await self.sender.close()
                with contextlib.suppress(Exception):
                    await nc.close()
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.close(), 2)

    async def _await_lock(self, conn: asyncpg.Connection) -> None:
        """Return once this connection holds the dispatcher lock (another replica may)."""
        while True:
            if await conn.fetchval(
                "SELECT pg_try_advisory_lock($1, hashtext($2))",
                DISPATCHER_LOCK_CLASS,
                self.settings.nats_stream,
            ):
                return
            await asyncio.sleep(self.settings.webhook_refresh_seconds)

    async def _serve(self, conn: asyncpg.Connection, js: JetStreamContext) -> None:
        """Keep one consumer per active endpoint while the lock connection lives."""
        known: set[str] | None = None
        while True:
            # The lock lives with this connection: losing it means another replica may lead.
            await conn.fetchval("SELECT 1")
            active = {e.webhook_id: e for e in await self.endpoints.active()}
            for webhook_id in set(self._consumers) - set(active):
                await self._stop_consumer(webhook_id)
            for webhook_id, endpoint in active.items():
                if webhook_id not in self._consumers:
                    await self._upgrade_consumer(js, webhook_id)
                    self._start_consumer(js, endpoint)
            if known != set(active):
                await self._delete_stale_consumers(js, set(active))
                known = set(active)
            await asyncio.sleep(self.settings.webhook_refresh_seconds)

    async def _upgrade_consumer(self, js: JetStreamContext, webhook_id: str) -> None:
        """Let an endpoint's consumer made by an older keyledger (one message in flight,
        so one failing key held every other back) keep ``MAX_WAITING`` events waiting."""
        name = consumer_name(webhook_id)
        try:
            info = await js.consumer_info(self.settings.nats_stream, name)
            if info.config.max_ack_pending != MAX_WAITING:
                config = info.config.evolve(max_ack_pending=MAX_WAITING)
                await js.add_consumer(self.settings.nats_stream, config=config)
        except nats.js.errors.NotFoundError:
            return  # a new endpoint: its consumer is made as configured
        except (nats.errors.Error, TimeoutError) as exc:
            # It still delivers, in order per endpoint; the next leader tries again.
            log.warning("webhook_consumer_not_upgraded", webhook_id=webhook_id, error=repr(exc))

    def _start_consumer(self, js: JetStreamContext, endpoint: Endpoint) -> None:
        consumer = EventConsumer(
            js,
            durable=consumer_name(endpoint.webhook_id),
            handler=functools.partial(self.deliver, endpoint),
            filter_subject=subject_filter(
                org_id=endpoint.org_id, prefix=self.settings.nats_subject_prefix
            ),
            stream=self.settings.nats_stream,
            # One at a time, in log order: a key's later event is never tried before the
            # earlier one has been.
            batch_size=1,
            fetch_wait_seconds=1.0,
            # Longer than one delivery can take, so a slow receiver is not sent it twice.
            ack_wait_seconds=2 * self.settings.webhook_timeout_seconds + 5,
            max_ack_pending=MAX_WAITING,
            deliver_from=endpoint.created_at,
        )
        task = asyncio.create_task(consumer.run(), name=f"webhook-{endpoint.webhook_id}")
        self._consumers[endpoint.webhook_id] = (consumer, task)

    async def _stop_consumer(self, webhook_id: str) -> None:
        consumer, task = self._consumers.pop(webhook_id)
        consumer.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        self._secrets.pop(webhook_id, None)

    async def _stop_consumers(self) -> None:
        for webhook_id in list(self._consumers):
            await self._stop_consumer(webhook_id)

    async def _delete_stale_consumers(self, js: JetStreamContext, active: set[str]) -> None:
        """Delete the durable consumers of removed endpoints (JetStream keeps them otherwise)."""
        try:
            infos = await js.consumers_info(self.settings.nats_stream)
        except (nats.errors.Error, TimeoutError) as exc:
            log.warning("webhook_consumers_unlisted", error=repr(exc))
            return
        for info in infos:
            name = info.name or ""
            if (
                name.startswith(CONSUMER_PREFIX)
                and name.removeprefix(CONSUMER_PREFIX) not in active
            ):
                with contextlib.suppress(nats.errors.Error, TimeoutError):
                    await js.delete_consumer(self.settings.nats_stream, name)

    async def deliver(self, endpoint: Endpoint, envelope: Envelope, event: KeyEvent) -> None:
        """Deliver one event: return once settled, raise ``RetryLater`` to try again later."""
        del event  # the envelope is what is sent
        if not endpoint.wants(envelope.event_type) or not endpoint.follows(envelope):
            return
        history = await self.attempts.history(endpoint.webhook_id, envelope.event_id)
        if history.settled:
            return  # delivered (or given up) before its acknowledgement was lost
        await self._wait_for_earlier(endpoint, envelope)
        attempt = history.attempts + 1
        now = utc_now()
        status, error = await self._post(endpoint, envelope)
        if status is not None and 200 <= status < 300:
            await self.attempts.record(
                endpoint.webhook_id, envelope, attempt=attempt, at=now, outcome="delivered",
                status_code=status,
            )  # fmt: skip
            return
        first = history.first_attempt or now
        if self.backoff.exhausted(first, now):
            await self.attempts.record(
                endpoint.webhook_id, envelope, attempt=attempt, at=now, outcome="dead_lettered",
                status_code=status, error=error,
            )  # fmt: skip
            log.warning(
                "webhook_dead_lettered",
                webhook_id=endpoint.webhook_id,
                event_id=str(envelope.event_id),
                attempts=attempt,
            )
            return
        await self.attempts.record(
            endpoint.webhook_id, envelope, attempt=attempt, at=now, outcome="failed",
            status_code=status, error=error,
        )  # fmt: skip
        raise RetryLater(self.backoff.delay(attempt), error or f"HTTP {status}")

    async def _wait_for_earlier(self, endpoint: Endpoint, envelope: Envelope) -> None:
        """``RetryLater`` while an earlier event of the same key is not settled at this
        endpoint: in order per key, without holding back the other keys' events."""
        after_position, since = endpoint.since()
        blocker = await self.attempts.earlier_unsettled(
            endpoint.webhook_id,
            envelope,
            after_position=after_position,
            since=since,
            event_types=endpoint.sent_types(),
            relay=relay_consumer(self.settings.nats_stream),
        )
        if blocker is not None:
            # About when the earlier event is tried again (soon, if it never was yet).
            delay = self.backoff.delay(max(1, blocker.attempts))
            raise RetryLater(delay, f"waits for position {blocker.position} of its key")

    async def _post(self, endpoint: Endpoint, envelope: Envelope) -> tuple[int | None, str | None]:
        """(status, None) when the receiver answered, (None, why) when it could not be asked."""
        refusal = await refusal_before_sending(
            endpoint.url, allow_private=self.settings.webhooks_allow_private
        )
        if refusal is not None:
            return None, refusal
        try:
            secret = self._secret(endpoint)
        except InvalidTag:
            return None, "the signing secret cannot be opened (was the pepper changed?)"
        # As the event stream shows it: no secret hash (useless without the pepper, yet no
        # receiver's business), so no chain hash either (it could not be checked).
        body = canonical_json(public_envelope(envelope)).encode()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "keyledger-webhooks/1",
            EVENT_ID_HEADER: str(envelope.event_id),
            SIGNATURE_HEADER: signature_header(secret, body),
        }
        return await self.sender.post(endpoint.url, body, headers)

    def _secret(self, endpoint: Endpoint) -> str:
        secret = self._secrets.get(endpoint.webhook_id)
        if secret is None:
            secret = self.endpoints.seal.open(endpoint.webhook_id, endpoint.sealed_secret)
            self._secrets[endpoint.webhook_id] = secret
        return secret

    def describe(self) -> dict[str, Any]:
        """For diagnostics: whether this replica delivers, and to how many endpoints."""
        return {"leader": self.is_leader, "endpoints": len(self._consumers)}
