"""A burst of requests and log writes, all fired at once (``tests/integration/test_hostile_burst``).

Each request is recorded as a ``Sent`` with what it must answer; ``Burst.calls``
are the coroutines to gather (shuffled by the test).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from tests.support.api import Api
from tests.support.poison import Injected, IsolatedApp, inject
from tests.support.raw_http import raw_request

JSON = {"Content-Type": "application/json"}


@dataclass
class Sent:
    """One request of the burst and what came back."""

    label: str
    normal: bool
    expected: tuple[int, str | None]  # (status, error code) for poison; (status, None) if normal
    status: int = 0
    body: bytes = b""

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Burst:
    """Everything the burst is made of, and the keys made before it."""

    app: IsolatedApp
    api: Api
    limited: Api
    orgs: list[str]
    # key id -> (org, expected final status, expected name), for the normal keys.
    expected: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    secrets: dict[str, str] = field(default_factory=dict)  # key id -> current secret
    embed: set[str] = field(default_factory=set)
    sent: list[Sent] = field(default_factory=list)
    calls: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    injected: dict[str, Injected] = field(default_factory=dict)
    victim: str = ""
    known_secret: str = ""


def normal(burst: Burst, label: str, method: str, path: str, body: Any, on_ok: Any) -> None:
    """An ordinary command: it must answer 2xx; ``on_ok(answer)`` records its effect."""
    sent = Sent(label, True, (0, None))
    burst.sent.append(sent)

    async def call() -> None:
        response = await burst.app.client.request(
            method, path, json=body, headers=burst.api.headers()
        )
        sent.status, sent.body = response.status, await response.read()
        if 200 <= sent.status < 300:
            on_ok(sent.json())

    burst.calls.append(call)


def poison(
    burst: Burst,
    label: str,
    expected: tuple[int, str],
    method: str,
    path: str,
    *,
    body: Any = None,
    raw: bytes | None = None,
    api: Api | None = None,
    headers: list[bytes] | None = None,
) -> None:
    """A hostile request: it must answer ``expected`` (status, stable error code)."""
    sent = Sent(label, False, expected)
    burst.sent.append(sent)
    caller = api or burst.api

    async def call() -> None:
        if headers is not None:  # bytes no HTTP client library will send
            sent.status, sent.body = await raw_request(
                burst.app.client, method, path, headers, raw or b""
            )
            return
        kwargs: dict[str, Any] = {"headers": {**caller.headers(), **JSON}}
        if raw is not None:
            kwargs["data"] = raw
        elif body is not None:
            kwargs["data"] = json.dumps(body)
        response = await burst.app.client.request(method, path, **kwargs)
        sent.status, sent.body = response.status, await response.read()

    burst.calls.append(call)


def injection(burst: Burst, label: str, org: str, **kwargs: Any) -> None:
    """A poison event written straight into the log during the burst."""

    async def call() -> None:
        async with burst.app.pool.acquire() as conn:
            burst.injected[label] = await inject(conn, org, **kwargs)

    burst.calls.append(call)


async def sample_readiness(app: IsolatedApp, stop: asyncio.Event, seen: list[Any]) -> None:
    """Ask ``/readyz`` again and again until ``stop``; (status, readiness) each time."""
    while not stop.is_set():
        response = await app.client.get("/readyz")
        seen.append((response.status, (await response.json())["status"]))
        await asyncio.sleep(0.01)
