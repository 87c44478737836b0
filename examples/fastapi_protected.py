"""A tiny FastAPI service protected by keyledger keys, verified in process.

    KEYLEDGER_API_URL=http://127.0.0.1:8080 KEYLEDGER_SERVICE_KEY=sk_live_… \
    KEYLEDGER_NATS_URL=nats://127.0.0.1:4222 \
    uvicorn --factory --app-dir examples fastapi_protected:make_app --port 8082
    # or: python examples/fastapi_protected.py --port 8082

    curl -s localhost:8082/orders -H "Authorization: Bearer sk_live_…"   # a key with orders:read

Needs the client (``pip install ./clients/python``), FastAPI and uvicorn. The service key
needs the ``keys:verify`` scope. ``ORDERS_ENVIRONMENT`` (``live`` unless set) is the
environment whose keys the service accepts: a ``sk_test_`` key is refused by a live
service (403 WRONG_ENVIRONMENT), and a live key by a test one. Optional:
``KEYLEDGER_NATS_STREAM`` and ``KEYLEDGER_NATS_SUBJECT_PREFIX`` when keyledger publishes
elsewhere than the defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

import uvicorn
from fastapi import Depends, FastAPI, Request

from keyledger_client import KeyledgerClient, LocalVerifier, VerifiedKey
from keyledger_client.asgi import KeyledgerAuth, verified_key
from keyledger_client.events.vocabulary import ENVIRONMENTS


def caller(request: Request) -> VerifiedKey:
    """The key the middleware verified, as a FastAPI dependency."""
    return verified_key(request)


Caller = Annotated[VerifiedKey, Depends(caller)]


def make_app() -> FastAPI:
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

    @contextlib.asynccontextmanager
    async def verifying(_: FastAPI) -> AsyncIterator[None]:
        async with client, verifier:
            yield

    app = FastAPI(lifespan=verifying)
    app.add_middleware(
        KeyledgerAuth,
        verifier=verifier,
        scopes=["orders:read"],
        environment=environment,
        exempt={"/healthz"},
    )

    @app.get("/orders")
    async def orders(key: Caller) -> dict[str, Any]:
        """The protected resource: it knows which key (and org) is calling."""
        return {"orders": [], "key_id": key.id, "org_id": key.org_id}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a service protected by keyledger keys")
    parser.add_argument("--port", type=int, default=8082)
    port = parser.parse_args().port  # first: --help needs no settings
    uvicorn.run(make_app(), host="127.0.0.1", port=port)
