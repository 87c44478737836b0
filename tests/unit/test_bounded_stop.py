"""A replica's stop is bounded: a background task that does not stop is left behind, logged."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from service import bootstrap


async def test_a_task_that_ignores_its_cancel_does_not_hold_the_stop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(bootstrap, "STOP_GRACE_SECONDS", 0.05)
    let_go = asyncio.Event()

    async def stubborn() -> None:
        while not let_go.is_set():
            with contextlib.suppress(asyncio.CancelledError):
                await let_go.wait()

    async with contextlib.AsyncExitStack() as stack:
        bootstrap._in_background(stack, stubborn(), "stubborn")
        await asyncio.sleep(0)
    # The stop came back although the task is still running.
    (left,) = [t for t in asyncio.all_tasks() if t.get_name() == "stubborn"]
    assert not left.done()
    let_go.set()
    await left


async def test_a_task_that_stops_is_awaited(monkeypatch: pytest.MonkeyPatch) -> None:
    stopped = asyncio.Event()

    async def polite() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.set()

    async with contextlib.AsyncExitStack() as stack:
        bootstrap._in_background(stack, polite(), "polite")
        await asyncio.sleep(0)
    assert stopped.is_set()
