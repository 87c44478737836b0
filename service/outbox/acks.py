"""JetStream publishes whose acknowledgements a batch waits for together.

``JetStreamContext.publish`` is a request per message: to pipeline a batch,
each message needed a task of its own and a timer of its own (``gather`` over
``publish(timeout=…)``), a measurable share of the relay's work per event.
Here every message of a batch is sent with a reply subject of its own under
one wildcard subscription, and the batch waits once, ``ack_timeout`` at most,
for every acknowledgement (``service.outbox.messages.publish_batch``).

What an acknowledgement means is JetStream's, as with ``publish``: a PubAck
(``stream`` and ``seq``) is the message stored (or dropped as a duplicate of
its ``Nats-Msg-Id``), an ``error`` is ``APIError`` (its ``err_code`` says whose
fault), no stream listening is ``NoStreamResponseError``, any other answer is
an ``APIError`` too; no answer within the timeout is NATS's failure, and the
message is sent again with its batch.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING

from nats.js.errors import APIError, NoStreamResponseError

if TYPE_CHECKING:
    from nats.aio.client import Client
    from nats.aio.msg import Msg

# The header JetStream checks a message against (as ``publish(stream=…)`` sets it).
EXPECTED_STREAM_HEADER = "Nats-Expected-Stream"
_STATUS_HEADER = "Status"
_NO_RESPONDERS = "503"


class AckedPublisher:
    """Sends messages to JetStream on one connection; each send's future is settled by
    its acknowledgement (see module doc)."""

    def __init__(self, nc: Client) -> None:
        self.nc = nc
        self._prefix: str | None = None
        self._numbers = itertools.count()
        self._waiting: dict[str, asyncio.Future[None]] = {}

    async def send(
        self, subject: str, payload: bytes, headers: Mapping[str, str]
    ) -> asyncio.Future[None]:
        """Publish one message now; the future its acknowledgement settles.

        Raises what publishing it raises (a refused subject, header or size, a
        closed connection): it was not sent, and nothing waits for it.
        """
        if self._prefix is None:
            prefix = self.nc.new_inbox() + "."
            await self.nc.subscribe(prefix + "*", cb=self._acknowledged)
            self._prefix = prefix
        token = str(next(self._numbers))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[token] = future
        try:
            await self.nc.publish(
                subject, payload, reply=self._prefix + token, headers=dict(headers)
            )
        except BaseException:
            del self._waiting[token]
            raise
        return future

    def forget(self, futures: list[asyncio.Future[None]]) -> None:
        """Stop waiting for these (timed out): an acknowledgement coming later is ignored."""
        if not futures:
            return
        unsettled = {id(future) for future in futures}
        for token, future in list(self._waiting.items()):
            if id(future) in unsettled:
                del self._waiting[token]
                future.cancel()

    async def _acknowledged(self, msg: Msg) -> None:
        prefix = self._prefix or ""
        future = self._waiting.pop(msg.subject[len(prefix) :], None)
        if future is None or future.done():
            return
        if msg.headers and msg.headers.get(_STATUS_HEADER) == _NO_RESPONDERS:
            future.set_exception(NoStreamResponseError())
            return
        try:
            answer = json.loads(msg.data)
        except ValueError:
            answer = None
        error = answer.get("error") if isinstance(answer, dict) else None
        if error is not None:
            try:
                APIError.from_error(error)  # raises the error's own class (as ``publish`` does)
            except Exception as exc:
                future.set_exception(exc)
            else:  # pragma: no cover - from_error always raises
                future.set_exception(APIError(description=str(error)))
        elif isinstance(answer, dict) and "stream" in answer and "seq" in answer:
            future.set_result(None)  # stored, or a duplicate of its Nats-Msg-Id
        else:
            # Whoever answered, it was not JetStream storing the message (``publish`` fails
            # such an answer too): not settled, so it is sent again.
            future.set_exception(APIError(description="the answer is not a JetStream PubAck"))
