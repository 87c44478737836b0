"""Reading a server-sent-events stream in tests, one event at a time."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from aiohttp import ClientResponse


@dataclass(frozen=True)
class SseEvent:
    """One event of the stream (comments are counted, not returned)."""

    id: str | None
    event: str
    data: str

    def json(self) -> Any:
        return json.loads(self.data)


class SseReader:
    """Parses ``response``'s body into events; ``next`` waits for the next one."""

    def __init__(self, response: ClientResponse) -> None:
        self.response = response
        self.comments: list[str] = []

    async def next(self, within: float = 10.0) -> SseEvent:
        """The next event; fails the test after ``within`` seconds (a hang, not a timing)."""
        return await asyncio.wait_for(self._next(), within)

    async def _next(self) -> SseEvent:
        fields: dict[str, str] = {}
        while True:
            raw = await self.response.content.readline()
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode().rstrip("\n")
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            if line == "":
                if "data" in fields or "event" in fields:
                    return SseEvent(
                        fields.get("id"), fields.get("event", "message"), fields.get("data", "")
                    )
                fields.clear()
                continue
            name, _, value = line.partition(":")
            fields[name] = value.removeprefix(" ")

    async def next_of(self, event: str, within: float = 10.0) -> SseEvent:
        """The next event named ``event``, skipping others."""
        while True:
            found = await self.next(within)
            if found.event == event:
                return found
