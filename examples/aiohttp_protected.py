"""A tiny aiohttp service protected by keyledger keys, verified in process.

    KEYLEDGER_API_URL=http://127.0.0.1:8080 KEYLEDGER_SERVICE_KEY=sk_live_… \
    KEYLEDGER_NATS_URL=nats://127.0.0.1:4222 python examples/aiohttp_protected.py --port 8081

    curl -s localhost:8081/orders -H "Authorization: Bearer sk_live_…"   # a key with orders:read

Needs only the client (``pip install ./clients/python``) and aiohttp. The service key
needs the ``keys:verify`` scope. ``ORDERS_ENVIRONMENT`` (``live`` unless set) is the
environment whose keys the service accepts: a ``sk_test_`` key is refused by a live
service (403 WRONG_ENVIRONMENT), and a live key by a test one. Optional:
``KEYLEDGER_NATS_STREAM`` and ``KEYLEDGER_NATS_SUBJECT_PREFIX`` when keyledger publishes
elsewhere than the defaults.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator

from aiohttp import web

from keyledger_client import KeyledgerClient, LocalVerifier
from keyledger_client.aiohttp import VERIFIED_KEY, auth_middleware
from keyledger_client.events.vocabulary import ENVIRONMENTS


async def orders(request: web.Request) -> web.Response:
    """The protected resource: it knows which key (and org) is calling."""
    key = request[VERIFIED_KEY]
    return web.json_response({"orders": [], "key_id": key.id, "org_id": key.org_id})


async def healthz(_: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app() -> web.Application:
    """The service: one verifier for its lifetime, every route but /healthz protected,
    only for keys of the environment it runs in."""
    # Always named: without environment= a key of either one verifies (sk_test_ on live).
    environment = os.environ.get("ORDERS_ENVIRONMENT", "live")
    if environment not in ENVIRONMENTS:  # refused at start, not at every request
        raise SystemExit(f"ORDERS_ENVIRONMENT must be live or test, not {environment!r}")
    client = KeyledgerClient(os.environ["KEYLEDGER_API_URL"], os.environ["KEYLEDGER_SERVICE_KEY"])
    verifier = LocalVerifier(
        client,
        os.environ["KEYLEDGER_NATS_URL"],
        stream=os.environ.get("KEYLEDGER_NATS_STREAM", "KEYLEDGER"),
        subject_prefix=os.environ.get("KEYLEDGER_NATS_SUBJECT_PREFIX", "keyledger.events"),
    )

    async def verifying(_: web.Application) -> AsyncIterator[None]:
        async with client, verifier:
            yield

    app = web.Application(
        middlewares=[
            auth_middleware(
                verifier, scopes=["orders:read"], environment=environment, exempt={"/healthz"}
            )
        ]
    )
    app.cleanup_ctx.append(verifying)
    app.router.add_get("/orders", orders)
    app.router.add_get("/healthz", healthz)
    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a service protected by keyledger keys")
    parser.add_argument("--port", type=int, default=8081)
    port = parser.parse_args().port  # first: --help needs no settings
    web.run_app(make_app(), host="127.0.0.1", port=port, print=None)
