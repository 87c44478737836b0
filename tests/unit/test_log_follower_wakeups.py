"""Which wake-ups of a ``LogFollower`` name a position, and the steps they let a follower skip."""

from __future__ import annotations

import asyncio

from service.store.log_follower import LogFollower


def follower() -> LogFollower:
    # Never started: no connection; only ``wake`` and the poll wake consumers here.
    return LogFollower("postgresql://unused", poll_seconds=60.0)


async def test_only_wake_ups_that_all_name_a_position_are_positioned() -> None:
    log = follower()
    wakeups = log.subscribe()
    await wakeups.wait()
    assert not wakeups.positioned  # the first wait returns at once, knowing nothing
    log.wake(3)
    log.wake(4)
    assert await wakeups.wait() == 4
    assert wakeups.positioned
    log.wake(5)
    log.wake()  # a reconnect: whatever was appended while nobody listened
    assert await wakeups.wait() == 5
    assert not wakeups.positioned
    # The poll (here a wait that runs out) knows nothing either.
    await wakeups.wait(0)
    assert not wakeups.positioned


async def test_a_notification_of_applied_events_skips_the_step_and_others_do_not() -> None:
    log = follower()
    applied_up_to = 0
    steps: list[int] = []
    asked = asyncio.Queue[int]()
    stepped = asyncio.Queue[int]()

    async def step(head: int) -> None:
        steps.append(head)
        stepped.put_nowait(head)

    def applied(head: int) -> bool:
        asked.put_nowait(head)
        return applied_up_to >= head

    following = asyncio.create_task(log.follow(step, what="test", applied=applied))
    try:
        assert await stepped.get() == 0  # catches up at once
        applied_up_to = 7
        log.wake(7)  # handed over already: nothing to read
        assert await asked.get() == 7
        log.wake(8)  # not applied yet (after its hand-over turns): read
        assert await stepped.get() == 8
        applied_up_to = 8
        log.wake()  # a wake-up without a position always reads
        assert await stepped.get() == 8
        assert steps == [0, 8, 8]
    finally:
        following.cancel()
        await asyncio.gather(following, return_exceptions=True)
