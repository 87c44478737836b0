"""The HTTP client that posts webhook deliveries (the only outbound HTTP of keyledger)."""

from __future__ import annotations

import aiohttp


class WebhookSender:
    """Posts bodies to receivers; opened while this replica delivers."""

    def __init__(self, timeout_seconds: float) -> None:
        self.timeout_seconds = timeout_seconds
        self._session: aiohttp.ClientSession | None = None

    def open(self) -> None:
        """Start a connection pool for the deliveries to come."""
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self.timeout_seconds)
        )

    async def close(self) -> None:
        """Close the connection pool (a delivery in flight is cut short)."""
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def post(
        self, url: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int | None, str | None]:
        """(status, None or why it is not 2xx) when the receiver answered, (None, why) if not."""
        if self._session is None:
            return None, "not delivering"
        try:
            # No redirects: a redirect could lead to an address the URL checks refuse.
            async with self._session.post(
                url, data=body, headers=headers, allow_redirects=False
            ) as response:
                status = response.status
                return status, None if 200 <= status < 300 else f"HTTP {status}"
        except TimeoutError:
            return None, "timed out"
        except aiohttp.ClientError as exc:
            # The class only: a message may quote the receiver's answer.
            return None, f"connection failed ({exc.__class__.__name__})"
