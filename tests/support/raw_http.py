"""Requests written byte for byte, for input an HTTP client library refuses to send."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.support.api import Api

JSON = {"Content-Type": "application/json"}


async def raw_request(
    client: TestClient, method: str, target: str, headers: list[bytes], body: bytes = b""
) -> tuple[int, bytes]:
    """One HTTP/1.1 request written byte for byte (e.g. 0xFF in a header); (status, body)."""
    reader, writer = await asyncio.open_connection(client.server.host, client.server.port)
    head = [f"{method} {target} HTTP/1.1".encode(), b"Host: test", b"Connection: close"]
    if body:
        head += [b"Content-Type: application/json", f"Content-Length: {len(body)}".encode()]
    writer.write(b"\r\n".join([*head, *headers]) + b"\r\n\r\n" + body)
    await writer.drain()
    answer = await reader.read()
    writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


async def post_raw(client: TestClient, api: Api, path: str, raw: str | bytes) -> tuple[int, Any]:
    """POST ``raw`` as a JSON body, exactly as given; (status, parsed answer)."""
    response = await client.post(path, data=raw, headers={**api.headers(), **JSON})
    return response.status, await response.json()
