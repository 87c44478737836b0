"""Consume keyledger events from JetStream: a durable pull consumer and a handler.

Delivery is at least once: a message is acknowledged only after the handler
returns, and redelivered (after ``redeliver_delay_seconds``) when it raises,
so handlers should be idempotent (the envelope's ``event_id`` and ``position``
make that easy). Because the consumer is durable, a restarted subscriber
resumes where it stopped, including across NATS restarts.

This module needs only ``nats-py`` and ``keyledger_client.events``; it never imports keyledger's
service code, so another service can use it on its own (``nats_servers`` reads
a setting that lists a cluster's servers, comma-separated, as keyledger does)::

    nc = await nats.connect(servers=nats_servers(os.environ["NATS_URL"]))
    consumer = EventConsumer(nc.jetstream(), durable="billing", handler=on_event,
                             filter_subject=subject_filter(event_type="KeyRevoked"))
    await consumer.run()
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import nats.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from pydantic import ValidationError

from keyledger_client.events.codec import UnknownEventType, decode
from keyledger_client.events.models import Envelope, LogEvent
from keyledger_client.events.subjects import DEFAULT_STREAM, subject_filter

Handler = Callable[[Envelope, LogEvent], Awaitable[None]]


class RetryLater(Exception):
    """Raised by a handler to have its message redelivered after ``delay_seconds``.

    Unlike any other exception it is an expected outcome (a webhook receiver
    that is down), so it is logged briefly and sets its own delay: a handler
    can back off exponentially.
    """

    def __init__(self, delay_seconds: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay_seconds}s")
        self.delay_seconds = delay_seconds


log = logging.getLogger(__name__)


class EventConsumer:
    """Runs ``handler`` for every event matching ``filter_subject``, in stream order."""

    def __init__(
        self,
        js: JetStreamContext,
        *,
        durable: str,
        handler: Handler,
        filter_subject: str | None = None,
        stream: str = DEFAULT_STREAM,
        batch_size: int = 64,
        fetch_wait_seconds: float = 1.0,
        redeliver_delay_seconds: float = 1.0,
        ack_wait_seconds: float = 30.0,
        max_ack_pending: int | None = None,
        deliver_from: datetime | None = None,
    ) -> None:
        self.js = js
        self.durable = durable
        self.handler = handler
        self.filter_subject = filter_subject or subject_filter()
        self.stream = stream
        self.batch_size = batch_size
        self.fetch_wait_seconds = fetch_wait_seconds
        self.redeliver_delay_seconds = redeliver_delay_seconds
        self.ack_wait_seconds = ack_wait_seconds
        # 1: the next message waits until this one is acknowledged (strict order with retries).
        self.max_ack_pending = max_ack_pending
        # Only messages stored from this instant on (None: the whole stream).
        self.deliver_from = deliver_from
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        """Ask ``run`` to return after the batch in hand."""
        self._stopped.set()

    async def run(self) -> None:
        """Consume until ``stop()`` (or cancellation); survives NATS outages."""
        subscription = await self._subscribe()
        if subscription is None:
            return
        try:
            await self._consume(subscription)
        finally:
            # Only the local subscription: the durable consumer and its position stay.
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    async def _consume(self, subscription: JetStreamContext.PullSubscription) -> None:
        while not self._stopped.is_set():
            try:
                messages = await subscription.fetch(
                    self.batch_size, timeout=self.fetch_wait_seconds
                )
            except TimeoutError:
                continue  # nothing new within fetch_wait_seconds
            except nats.errors.Error as exc:
                # Disconnected or reconnecting: nats-py resubscribes on reconnect.
                log.warning("event consumer %s: fetch failed: %r", self.durable, exc)
                await self._sleep(self.redeliver_delay_seconds)
                continue
            try:
                await self.handle_batch(messages)
            except nats.errors.Error as exc:
                # An ack lost with the connection: JetStream redelivers after ack_wait.
                log.warning("event consumer %s: ack failed: %r", self.durable, exc)

    async def handle_batch(self, messages: Sequence[Msg]) -> None:
        """Handle messages in order; on a failure, hand it and the rest back for redelivery."""
        for index, msg in enumerate(messages):
            try:
                envelope, event = decode(msg)
            except UnknownEventType as exc:
                # A newer keyledger's event type: nothing this subscriber can act on.
                log.warning("event consumer %s: skipping unknown event type %s", self.durable, exc)
                await msg.ack()
                continue
            except ValidationError:
                # Not an envelope at all: redelivering it would never succeed.
                log.error("event consumer %s: dropping malformed message", self.durable)
                await msg.term()
                continue
            try:
                await self.handler(envelope, event)
            except RetryLater as retry:
                log.info(
                    "event consumer %s: position %s again in %ss: %s",
                    self.durable,
                    envelope.position,
                    retry.delay_seconds,
                    retry,
                )
                for pending in messages[index:]:
                    await pending.nak(delay=retry.delay_seconds)
                return
            except Exception:
                log.exception(
                    "event consumer %s: handler failed at position %s; will redeliver",
                    self.durable,
                    envelope.position,
                )
                # Keep order: the messages after the failed one wait for it.
                for pending in messages[index:]:
                    await pending.nak(delay=self.redeliver_delay_seconds)
                return
            await msg.ack()

    async def _subscribe(self) -> JetStreamContext.PullSubscription | None:
        """Create or bind the durable consumer, retrying while NATS is unreachable."""
        config = ConsumerConfig(
            durable_name=self.durable,
            filter_subject=self.filter_subject,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL
            if self.deliver_from is None
            else DeliverPolicy.BY_START_TIME,
            opt_start_time=self.deliver_from,
            ack_wait=self.ack_wait_seconds,
            max_ack_pending=self.max_ack_pending,
        )
        delay = 0.1
        while not self._stopped.is_set():
            try:
                return await self.js.pull_subscribe(
                    self.filter_subject, durable=self.durable, stream=self.stream, config=config
                )
            except (nats.errors.Error, TimeoutError) as exc:
                log.warning("event consumer %s: cannot subscribe yet: %r", self.durable, exc)
                await self._sleep(delay)
                delay = min(delay * 2, 5.0)
        return None

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)
