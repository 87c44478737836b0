"""The server process of ``bench.verify``: the keyledger API and a bare handler on one loop.

    python -m bench.verify_server DATABASE_URL --loop asyncio|uvloop

Serves the API and a bare aiohttp app (one POST handler that reads the body
and returns a constant JSON body) on two ports, from the same event loop in
this one process, so that the benchmark can load each with ``wrk`` and read
this process's CPU time. Logging is production's: one JSON access line per
request, here written to /dev/null. Once ready it prints one JSON line
(``ServerReady``: ports and the credentials to send) and serves until stdin
closes or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import sys
from typing import Any

import aiohttp
import asyncpg
from aiohttp import web

from events.models import Actor
from events.vocabulary import ALGORITHMS
from service.embedded import free_port
from service.event_loop import loop_factory
from service.http.app import create_app
from service.http.context import KEYLEDGER
from service.log_config import configure_logging
from service.service_keys import issue_service_key
from service.settings import Settings
from service.verification.build import hot_path
from service.verification.signing import sign, signing_payload

BARE_BODY = {"valid": True, "code": "VALID", "http_status": 200, "key": None}


class VerifyPathCounter:
    """Counts the connections the verify path (``Verifier``, ``CallerAuthenticator``)
    takes from the pool: every database round trip it could make goes through one."""

    def __init__(self) -> None:
        self.pool: asyncpg.Pool | None = None  # the API's, once it runs
        self.acquired = 0

    def acquire(self) -> Any:
        self.acquired += 1
        assert self.pool is not None
        return self.pool.acquire()


async def bare_handler(request: web.Request) -> web.Response:
    """The baseline: read the body, answer a constant JSON body."""
    await request.read()
    return web.json_response(BARE_BODY)


async def _generate(http: aiohttp.ClientSession, base: str, body: dict[str, Any]) -> dict[str, Any]:
    async with http.post(f"{base}/v1/orgs/bench/keys", json=body) as response:
        assert response.status == 201, await response.text()
        created: dict[str, Any] = await response.json()
        return created


async def _credentials(api: web.Application, base: str) -> dict[str, Any]:
    """A service key, a bearer key and one signed request per algorithm, all indexed."""
    service = api[KEYLEDGER]
    admin = await issue_service_key(
        service.pool,
        service.settings.pepper_bytes,
        name="bench",
        scopes=["admin"],
        actor=Actor(id="bench"),
    )
    await service.feed.wait_for(admin.position, 10.0)
    auth = {"Authorization": f"Bearer {admin.secret}"}
    async with aiohttp.ClientSession(headers=auth) as http:
        bearer = await _generate(http, base, {"name": "b", "type": "secret", "scopes": ["a:*"]})
        signed = {}
        for algorithm in ALGORITHMS:
            created = await _generate(
                http, base, {"name": algorithm, "type": "signing", "algorithm": algorithm}
            )
            body = '{"symbol": "OIL-BTC", "side": "buy", "qty": 12}'
            payload = signing_payload("POST", "/api/v1/orders", body)
            signed[algorithm] = {
                "key_id": created["key"]["id"],
                "method": "POST",
                "path": "/api/v1/orders",
                "body": body,
                "signature": sign(created["private_key"], payload),
            }
            await service.feed.wait_for(created["position"], 10.0)
        await service.feed.wait_for(bearer["position"], 10.0)
    return {"auth": auth, "bearer": bearer["secret"], "signed": signed}


async def serve(database_url: str) -> None:
    """Serve both apps until stdin closes or SIGTERM/SIGINT."""
    settings = Settings.from_env({}, database_url=database_url, pepper=secrets.token_hex(16))
    api, bare = create_app(settings), web.Application()
    bare.router.add_post("/bare", bare_handler)
    counter = VerifyPathCounter()

    async def counts(_: web.Request) -> web.Response:
        """The bench's view into the API: verify-path pool use and verdicts by code."""
        outcomes = dict(api[KEYLEDGER].verifier.outcomes)
        return web.json_response({"acquired": counter.acquired, "outcomes": outcomes})

    bare.router.add_get("/counts", counts)
    runners = [web.AppRunner(api, access_log=None), web.AppRunner(bare, access_log=None)]
    ports = [free_port(), free_port()]
    for runner, port in zip(runners, ports, strict=True):
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: stop.set() if not os.read(0, 4096) else None)
    service = api[KEYLEDGER]
    counter.pool = service.pool
    service.verifier.pool = counter
    service.callers.pool = counter
    try:
        ready = {
            "api": ports[0],
            "bare": ports[1],
            "loop": type(loop).__module__.split(".")[0],
            "hot_path": hot_path(),
            **await _credentials(api, f"http://127.0.0.1:{ports[0]}"),
        }
        print(json.dumps(ready), flush=True)
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database_url")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument(
        "--access-log-linger-ms", type=float, default=0.0, help="KEYLEDGER_ACCESS_LOG_LINGER_MS"
    )
    args = parser.parse_args()
    configure_logging(
        "info",
        stream=open(os.devnull, "w"),  # noqa: SIM115 - lives for the run
        access_log_linger=args.access_log_linger_ms / 1000,
    )
    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        runner.run(serve(args.database_url))


if __name__ == "__main__":
    main()
