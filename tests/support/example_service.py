"""An example service of examples/ started as its own process, until it answers /healthz."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp

from service.embedded import free_port
from tests.support.client_env import ROOT
from tests.support.outbox import eventually

# How each example is started, as its docstring tells a reader to ({port}: a free port).
EXAMPLES: dict[str, tuple[str, ...]] = {
    "aiohttp": ("examples/aiohttp_protected.py", "--port", "{port}"),
    # With the uvicorn command line, as a FastAPI service is usually run.
    "fastapi": (
        "-m",
        "uvicorn",
        "--factory",
        "--app-dir",
        "examples",
        "fastapi_protected:make_app",
        "--port",
        "{port}",
    ),
}


@contextlib.asynccontextmanager
async def example_service(
    python: str, arguments: Sequence[str], env: dict[str, str]
) -> AsyncIterator[str]:
    """Start ``python arguments…`` in the repository; its base URL once /healthz is 200.

    Its output goes to a file (a pipe nobody reads would block it), shown if it dies."""
    port = free_port()
    with tempfile.TemporaryFile() as output:
        process = await asyncio.create_subprocess_exec(
            python,
            *(argument.format(port=port) for argument in arguments),
            env=env,
            cwd=ROOT,
            stdout=output,
            stderr=output,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            async with aiohttp.ClientSession() as http:

                async def healthy() -> bool:
                    if process.returncode is not None:
                        output.seek(0)
                        raise AssertionError(f"the example exited: {output.read()[-3000:]!r}")
                    try:
                        async with http.get(f"{url}/healthz") as response:
                            return response.status == 200
                    except aiohttp.ClientConnectionError:
                        return False

                await eventually(healthy, within=60.0, what=f"the example service {arguments}")
            yield url
        finally:
            if process.returncode is None:
                process.terminate()
            await process.wait()


async def call(url: str, secret: str | None, **headers: str) -> tuple[int, Any, dict[str, str]]:
    """GET ``url`` with ``secret`` as the bearer key: status, JSON body, headers."""
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as response:
        return response.status, await response.json(), dict(response.headers)
