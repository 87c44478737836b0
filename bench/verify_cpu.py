"""Server CPU per request without sockets: ``python -m bench.verify_cpu``.

Raw HTTP requests are fed to the server's protocol objects (aiohttp's
``RequestHandler``) over an in-memory transport, and the answers are counted
as they are written: what is measured is the Python work of a request (parser,
routing, request context, handler, answer), without the kernel's share, which
``bench.verify`` includes but which varies with the machine's load. Each round
sends one request on each of ``--connections`` connections and waits for all
the answers; one connection is the worst case for per-turn costs (the access
log's write), 32 the case ``wrk -c32`` approaches on a busy loop.

Targets: the bare aiohttp handler of ``bench.verify_server``, ``GET /healthz``,
bearer ``POST /v1/verify`` and ``GET /v1/authorize``, rounds interleaved and
repeated; the minimum and the median µs/request of the repeats are reported
(the minimum is the least disturbed by other processes).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from bench.support import scratch_database
from bench.verify_server import _credentials, bare_handler
from service.embedded import free_port
from service.event_loop import loop_factory
from service.http.app import create_app
from service.log_config import configure_logging
from service.settings import Settings

PEPPER = "bench-verify-cpu-pepper-0123456789abcdef"


class MemoryTransport(asyncio.Transport):
    """A connection's far end: counts the answers written to it."""

    def __init__(self) -> None:
        super().__init__()
        self.answers = 0
        self.last = b""

    def write(self, data: Any) -> None:
        self.last = bytes(data)
        self.answers += self.last.count(b"HTTP/1.1 ")

    def is_closing(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 40000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        pass


def raw_request(method: str, path: str, headers: dict[str, str], body: bytes = b"") -> bytes:
    """One HTTP/1.1 request as the client would send it."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def cpu_per_request(
    server: Callable[[], RequestHandler], request: bytes, rounds: int, connections: int
) -> float:
    """µs of this process's CPU per request over ``rounds`` × ``connections`` requests."""
    pairs = []
    for _ in range(connections):
        protocol, transport = server(), MemoryTransport()
        protocol.connection_made(transport)
        pairs.append((protocol, transport))

    async def round_trip(answers: int) -> None:
        """One request on every connection; wait until each has ``answers`` answers."""
        for protocol, _transport in pairs:
            protocol.data_received(request)
        for _protocol, transport in pairs:
            # Polling turns, not an Event: each turn runs the server's ready callbacks.
            while transport.answers < answers:  # noqa: ASYNC110
                await asyncio.sleep(0)

    for answers in range(1, 11):  # warm-up
        await round_trip(answers)
    for _protocol, transport in pairs:  # what is measured is the usual answer, not an error
        if not transport.last.startswith(b"HTTP/1.1 200 "):
            raise RuntimeError(f"not a 200 answer: {transport.last[:200]!r}")
    started = time.process_time()
    for answers in range(11, 11 + rounds):
        await round_trip(answers)
    used = time.process_time() - started
    for protocol, _transport in pairs:
        protocol.connection_lost(None)
    return used / (rounds * connections) * 1e6


async def measure(database_url: str, rounds: int, connections: int, repeats: int) -> list[str]:
    """The Markdown rows: target, min and median µs/request, × bare by the minimum."""
    settings = Settings.from_env({}, database_url=database_url, pepper=PEPPER)
    api, bare = create_app(settings), web.Application()
    bare.router.add_post("/bare", bare_handler)
    runners = [web.AppRunner(api, access_log=None), web.AppRunner(bare, access_log=None)]
    port = free_port()
    for runner in runners:
        await runner.setup()
    await web.TCPSite(runners[0], "127.0.0.1", port).start()
    try:
        credentials = await _credentials(api, f"http://127.0.0.1:{port}")
        service_key = credentials["auth"]["Authorization"].removeprefix("Bearer ")
        body = json.dumps({"key": credentials["bearer"], "scopes": ["a:read"]}).encode()
        posted = {**credentials["auth"], "Content-Type": "application/json"}
        proxied = {"X-Keyledger-Service-Key": service_key}
        proxied["Authorization"] = f"Bearer {credentials['bearer']}"
        api_server, bare_server = runners[0].server, runners[1].server
        assert api_server is not None and bare_server is not None
        targets = {
            "bare aiohttp handler": (bare_server, raw_request("POST", "/bare", posted, body)),
            "GET /healthz": (api_server, raw_request("GET", "/healthz", {})),
            "POST /v1/verify bearer": (
                api_server,
                raw_request("POST", "/v1/verify", posted, body),
            ),
            "GET /v1/authorize": (
                api_server,
                raw_request("GET", "/v1/authorize?scopes=a:read", proxied),
            ),
        }
        results: dict[str, list[float]] = {name: [] for name in targets}
        for _ in range(repeats):
            for name, (server, request) in targets.items():
                results[name].append(await cpu_per_request(server, request, rounds, connections))
    finally:
        for runner in runners:
            await runner.cleanup()
    bare_min = min(results["bare aiohttp handler"])
    rows = [
        "| target | min µs/request | median µs/request | × bare (by min) |",
        "|---|---:|---:|---:|",
    ]
    for name, values in results.items():
        rows.append(
            f"| {name} | {min(values):.1f} | {statistics.median(values):.1f}"
            f" | {bare_min / min(values):.2f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=100, help="requests per connection")
    parser.add_argument("--repeats", type=int, default=12)
    parser.add_argument("--access-log-linger-ms", type=float, default=0.0)
    args = parser.parse_args()
    configure_logging(
        "info",
        stream=open(os.devnull, "w"),  # noqa: SIM115 - lives for the run
        access_log_linger=args.access_log_linger_ms / 1000,
    )
    server_url = os.environ["KEYLEDGER_TEST_DATABASE_URL"]

    async def run() -> list[str]:
        async with scratch_database(server_url, prefix="keyledger_bench") as url:
            return await measure(url, args.rounds, args.connections, args.repeats)

    with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
        rows = runner.run(run())
    linger = f", access log linger {args.access_log_linger_ms:g} ms"
    print(f"In-process CPU per request ({args.loop}, {args.connections} connections{linger}):")
    print("\n" + "\n".join(rows))


if __name__ == "__main__":
    main()
