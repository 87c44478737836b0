"""Following the event log: the one way to hear that it has grown.

Every follower of the log (the projection runner, the verification index
feed, the outbox relay) does the same thing: catch up, wait until the log may
have grown, catch up again. ``LogFollower`` is the waiting:

- PostgreSQL ``LISTEN`` on ``NOTIFY_CHANNEL`` (every append notifies, with its
  position as payload) on a connection of its own. When that connection drops,
  it reconnects after a backoff and wakes everyone: an append made while
  nobody listened sent a notification nobody heard.
- ``wake(position)`` for this process (a commit here, a gap noticed elsewhere,
  a stop request).
- A fallback poll: a waiter that has heard nothing for ``poll_seconds`` wakes
  anyway. It is only the safety net for a lost notification.

Each consumer waits on its own ``Wakeups`` (``subscribe()``), so one follower
can serve several consumers and none eats another's wake-up. A wake-up that
arrives while a consumer is busy is kept for its next wait, so an event
committed during a catch-up is never left waiting for the poll.

``RetryPolicy`` is the one retry policy of the followers: an exponential
backoff, reset by a success. The listener's reconnects and ``follow``'s
retries of a failed step both use it.

Typical use::

    async with LogFollower(database_url, poll_seconds=5.0, name="index") as log:
        await log.follow(catch_up, what="index")  # catch_up(head) now, then on every wake-up
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

import asyncpg
import structlog

from service.store.event_store import NOTIFY_CHANNEL

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long to wait before trying again: doubling from ``first`` up to ``most`` seconds."""

    first_seconds: float = 0.1
    most_seconds: float = 5.0

    def backoff(self) -> Backoff:
        """A fresh sequence of delays under this policy."""
        return Backoff(self)


class Backoff:
    """The delays of one run of failures; ``reset`` after a success."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.current = policy.first_seconds

    def reset(self) -> None:
        """Back to the first delay (the last attempt succeeded)."""
        self.current = self.policy.first_seconds

    def next(self) -> float:
        """The delay before the next attempt; each call doubles the following one."""
        delay = self.current
        self.current = min(self.current * 2, self.policy.most_seconds)
        return delay


class Wakeups:
    """One consumer's wake-ups from a ``LogFollower``; the first wait returns at once."""

    def __init__(self, follower: LogFollower) -> None:
        self._follower = follower
        self._woken = asyncio.Event()
        self._woken.set()  # a consumer catches up first, then waits
        self._positioned = False
        #: Whether the last ``wait`` ended only by wake-ups that each named a position
        #: (notifications), not by the poll or a wake-up that knows nothing (a reconnect).
        self.positioned = False

    def wake(self, *, positioned: bool = False) -> None:
        """Make the next (or current) ``wait`` return at once; ``positioned``: the wake-up
        names the position the log has reached."""
        self._positioned = positioned and (self._positioned or not self._woken.is_set())
        self._woken.set()

    async def wait(self, seconds: float | None = None) -> int:
        """Wait for a wake-up, or ``seconds`` (the follower's poll by default).

        Returns the highest log position heard of so far (0 when none).
        """
        timeout = self._follower.poll_seconds if seconds is None else seconds
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._woken.wait()
        self.positioned = self._woken.is_set() and self._positioned
        self._woken.clear()
        self._positioned = False
        return self._follower.head

    def close(self) -> None:
        """Stop receiving wake-ups."""
        self._follower._subscribers.discard(self)

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> int:
        return await self.wait()


# Event-loop turns a notification waits for its commit's observers (see ``_handed``).
# (Public: the outbox relay, which waits on its own, waits as long.)
HAND_OVER_TURNS = 3


async def _handed(applied: Callable[[int], bool], head: int) -> bool:
    """Whether the events up to ``head`` are (or, within a few loop turns, will be)
    applied already.

    The notification of this replica's own commit races the commit's answer on
    the writer's connection, and its observers hand the events over a turn or
    two after that answer: waiting those turns rather than reading saves the
    catch-up reading and decoding them from the log (the usual case under load).
    """
    for _ in range(HAND_OVER_TURNS):
        if applied(head):
            return True
        await asyncio.sleep(0)
    return applied(head)


class LogFollower:
    """Hears the log grow (``LISTEN`` with reconnects, ``wake``, a poll) and wakes consumers."""

    def __init__(
        self,
        database_url: str,
        *,
        poll_seconds: float,
        retry: RetryPolicy | None = None,
        name: str = "log",
    ) -> None:
        self.database_url = database_url
        self.poll_seconds = poll_seconds
        self.retry = retry or RetryPolicy()
        self.name = name
        #: The highest position heard of (notifications and ``wake``); 0 when none.
        self.head = 0
        #: True while the ``LISTEN`` connection is up.
        self.listening = False
        self._subscribers: set[Wakeups] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def application_name(self) -> str:
        """How the ``LISTEN`` connection is named in ``pg_stat_activity``."""
        return f"keyledger {self.name} listener"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        """Start listening in the background (connecting included); never blocks."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name=f"{self.name}-log-listener")

    async def stop(self) -> None:
        """Stop listening and close the connection; ``start`` may be called again."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _value: BaseException | None,
        _traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- waking --------------------------------------------------------------

    def wake(self, position: int | None = None) -> None:
        """Tell every consumer that the log may have grown (to ``position`` if known)."""
        if position is not None and position > self.head:
            self.head = position
        for wakeups in self._subscribers:
            wakeups.wake(positioned=position is not None)

    def subscribe(self) -> Wakeups:
        """Wake-ups for one consumer; ``close`` them when done."""
        wakeups = Wakeups(self)
        self._subscribers.add(wakeups)
        return wakeups

    async def wakeups(self) -> AsyncIterator[int]:
        """Yield (the head heard of) at once, then after every wake-up or poll."""
        wakeups = self.subscribe()
        try:
            async for head in wakeups:
                yield head
        finally:
            wakeups.close()

    async def follow(
        self,
        step: Callable[[int], Awaitable[object]],
        *,
        what: str,
        fatal: tuple[type[Exception], ...] = (),
        applied: Callable[[int], bool] | None = None,
    ) -> None:
        """Run ``step(head)`` at once, then after every wake-up, until cancelled.

        A failing step is logged and run again after the retry policy's
        backoff (reset by a success). An exception of a ``fatal`` type is not
        retried: it ends following and propagates.

        ``applied(head)``: whether the consumer has everything up to ``head``
        already (handed over by this replica's commits). A wake-up made only of
        notifications up to such a head then skips the step: it would read
        nothing. The poll and a wake-up without a position (a reconnect) always
        run it, the safety net for a notification lost.
        """
        wakeups = self.subscribe()
        backoff = self.retry.backoff()
        try:
            while True:
                head = await wakeups.wait()
                if applied is not None and wakeups.positioned and await _handed(applied, head):
                    continue
                try:
                    await step(head)
                except fatal:
                    raise
                except Exception:
                    log.exception("log_follower_step_failed", follower=what)
                    await asyncio.sleep(backoff.next())
                    wakeups.wake()  # try again now, not at the next poll
                    continue
                backoff.reset()
        finally:
            wakeups.close()

    # -- listening -----------------------------------------------------------

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self.wake(int(payload) if payload.isdigit() else None)

    async def _listen(self) -> None:
        """Keep a ``LISTEN`` connection open; reconnect, after a backoff, when it drops."""
        backoff = self.retry.backoff()
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    self.database_url, server_settings={"application_name": self.application_name}
                )
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _conn, lost=lost: lost.set())
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notify)
                self.listening = True
                backoff.reset()
                self.wake()  # whatever was appended while nobody listened
                await lost.wait()
                log.warning("log_listener_lost", follower=self.name)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("log_listener_failed", follower=self.name, error=repr(exc))
            finally:
                self.listening = False
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
            await asyncio.sleep(backoff.next())
