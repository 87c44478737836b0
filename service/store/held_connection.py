"""A pool connection held from one use to the next while uses keep coming.

Giving a connection back to an asyncpg pool costs a round trip (its reset:
advisory locks, cursors, listeners, settings), and taking it again some
Python work. The command writer, each projection and the verification
index's catch-up use a connection for a short transaction or read, over and
over under load: holding it for ``linger`` seconds after a use spares both
for every use but the last of a burst.
"""

from __future__ import annotations

import asyncio

import asyncpg

# How long an unused connection is held before it goes back to the pool (seconds).
LINGER_SECONDS = 0.05


class HeldConnection:
    """``acquire`` a connection, ``done`` with it; it returns to the pool after ``linger``
    seconds unused, or at once by ``release`` (after a failure, or on stopping)."""

    def __init__(self, pool: asyncpg.Pool, linger_seconds: float = LINGER_SECONDS) -> None:
        self.pool = pool
        self.linger_seconds = linger_seconds
        self._conn: asyncpg.Connection | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._releasing: set[asyncio.Task[None]] = set()

    async def acquire(self) -> asyncpg.Connection:
        """The held connection, or a new one from the pool."""
        self._stop_timer()
        if self._conn is None:
            self._conn = await self.pool.acquire()
        return self._conn

    def done(self) -> None:
        """The use is over: give the connection back unless another use comes soon."""
        self._stop_timer()
        if self._conn is not None:
            self._timer = asyncio.get_running_loop().call_later(
                self.linger_seconds, self._release_later
            )

    async def release(self) -> None:
        """Give the connection back now (a failed use may have broken it: the next use
        takes another)."""
        self._stop_timer()
        conn, self._conn = self._conn, None
        if conn is not None:
            await self.pool.release(conn)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _release_later(self) -> None:
        self._timer = None
        # Let go of it here, not in the task: a use that comes before the task runs must
        # take another connection, never this one while the pool resets it.
        conn, self._conn = self._conn, None
        if conn is None:
            return
        task = asyncio.create_task(self.pool.release(conn), name="held-connection-release")
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
