"""A webhook receiver the tests run: a real HTTP server that records what it is sent."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from events.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, verify_signature
from service.embedded import free_port

# What the receiver answers for the n-th request on a path (0-based), given the envelope
# it carries: a status.
Answer = Callable[[int, dict[str, Any]], int]


@dataclass
class Received:
    """One request as the receiver saw it."""

    path: str
    event_id: str
    signature: str
    body: bytes
    status: int

    @property
    def envelope(self) -> dict[str, Any]:
        payload: dict[str, Any] = json.loads(self.body)
        return payload


@dataclass
class Receiver:
    """Records every request; answers per path with ``answers`` (default 200)."""

    port: int = field(default_factory=free_port)
    answers: dict[str, Answer] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)
    # Set for a path: the first request there waits for ``release`` before answering.
    hold: set[str] = field(default_factory=set)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    _server: TestServer | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        seen = sum(1 for item in self.received if item.path == request.path)
        status = self.answers.get(request.path, lambda _n, _envelope: 200)(seen, json.loads(body))
        if request.path in self.hold and seen == 0:
            self.received.append(
                Received(request.path, request.headers[EVENT_ID_HEADER], "", body, 0)
            )
            self.arrived.set()
            await self.release.wait()
            return web.Response(status=200)
        self.received.append(
            Received(
                request.path,
                request.headers[EVENT_ID_HEADER],
                request.headers[SIGNATURE_HEADER],
                body,
                status,
            )
        )
        return web.Response(status=status, text="receiver says: sk_live_not_a_secret")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self._handle)
        self._server = TestServer(app, host="127.0.0.1", port=self.port)
        await self._server.start_server()

    async def stop(self) -> None:
        if self._server is not None:
            self.release.set()
            await self._server.close()
            self._server = None

    def delivered(self, path: str) -> list[Received]:
        """Requests on ``path`` answered 2xx, in arrival order."""
        return [item for item in self.received if item.path == path and 200 <= item.status < 300]

    def all_signed_by(self, secret: str, path: str) -> bool:
        return all(
            verify_signature(secret, item.body, item.signature)
            for item in self.received
            if item.path == path and item.signature
        )


@contextlib.asynccontextmanager
async def running_receiver(**options: Any) -> AsyncIterator[Receiver]:
    receiver = Receiver(**options)
    await receiver.start()
    try:
        yield receiver
    finally:
        await receiver.stop()
