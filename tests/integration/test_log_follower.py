"""The LogFollower: NOTIFY, reconnects after the listener is killed, the poll; its consumers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from bench.support import migrated_database
from projections.key_views import NAME as KEY_VIEWS
from projections.key_views import KeyViews
from projections.runner import ProjectionRunner
from service.store.event_store import NOTIFY_CHANNEL
from service.store.log_follower import LogFollower, RetryPolicy
from service.verification.feed import IndexFeed
from service.verification.index import VerificationIndex
from tests.support.event_log import append_key
from tests.support.outbox import eventually

# Long enough that a test passing by way of the poll is impossible within the test's timeout.
NEVER = 3600.0
WITHIN = 20.0
FAST_RETRY = RetryPolicy(first_seconds=0.05, most_seconds=0.2)


@pytest.fixture(scope="module")
async def own_database(postgres_server_url: str) -> AsyncIterator[tuple[str, asyncpg.Pool]]:
    """A database of its own: made-up notifications must not reach the session's app."""
    async with migrated_database(postgres_server_url, prefix="keyledger_follower") as made:
        yield made


@pytest.fixture
def database_url(own_database: tuple[str, asyncpg.Pool]) -> str:
    return own_database[0]


@pytest.fixture
def pool(own_database: tuple[str, asyncpg.Pool]) -> asyncpg.Pool:
    return own_database[1]


def a_follower(database_url: str, poll_seconds: float = NEVER) -> LogFollower:
    return LogFollower(
        database_url,
        poll_seconds=poll_seconds,
        retry=FAST_RETRY,
        name=f"test-{uuid.uuid4().hex[:8]}",
    )


async def pids_named(pool: asyncpg.Pool, application_name: str) -> list[int]:
    rows = await pool.fetch(
        """SELECT pid FROM pg_stat_activity
           WHERE application_name = $1 AND datname = current_database()""",
        application_name,
    )
    return [r["pid"] for r in rows]


async def listener_pids(pool: asyncpg.Pool, follower: LogFollower) -> list[int]:
    return await pids_named(pool, follower.application_name)


async def listening(pool: asyncpg.Pool, follower: LogFollower) -> None:
    """Wait until the follower's LISTEN connection is up (and seen by the server)."""

    async def up() -> bool:
        return follower.listening and len(await listener_pids(pool, follower)) == 1

    await eventually(up, within=WITHIN, what="the LISTEN connection")


async def kill_listener(pool: asyncpg.Pool, application_name: str) -> int:
    """Terminate the one connection named ``application_name``, as a crash or failover would."""

    async def one() -> bool:
        return len(await pids_named(pool, application_name)) == 1

    await eventually(one, within=WITHIN, what=f"{application_name} to connect")
    (pid,) = await pids_named(pool, application_name)
    await pool.execute("SELECT pg_terminate_backend($1)", pid)

    async def gone() -> bool:
        return pid not in await pids_named(pool, application_name)

    await eventually(gone, within=WITHIN, what=f"{application_name} to end")
    return pid


@contextlib.asynccontextmanager
async def following(
    follower: LogFollower, step: Callable[[int], Awaitable[None]]
) -> AsyncIterator[None]:
    """``follower.follow(step)`` in the background for the block."""
    task = asyncio.create_task(follower.follow(step, what="test"))
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def _true_when(condition: Callable[[], bool]) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return condition()

    return check


async def notify(pool: asyncpg.Pool, payload: str) -> None:
    await pool.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, payload)


async def test_the_first_wait_returns_at_once_so_a_consumer_catches_up_first(
    database_url: str,
) -> None:
    follower = a_follower(database_url)  # not even started: no LISTEN, no poll within the test
    wakeups = follower.subscribe()
    async with asyncio.timeout(WITHIN):
        assert await wakeups.wait() == 0


async def test_a_notification_wakes_every_subscriber_with_its_position(
    database_url: str, pool: asyncpg.Pool
) -> None:
    async with a_follower(database_url) as follower:
        first, second = follower.subscribe(), follower.subscribe()
        for wakeups in (first, second):
            await wakeups.wait()  # the initial catch-up
        await listening(pool, follower)
        await notify(pool, "4242")
        async with asyncio.timeout(WITHIN):
            for wakeups in (first, second):
                while await wakeups.wait() != 4242:
                    pass  # the wake-up of the LISTEN connection coming up may come first
        assert follower.head == 4242


async def test_an_append_wakes_a_follower_through_the_event_store(
    database_url: str, pool: asyncpg.Pool
) -> None:
    async with a_follower(database_url) as follower:
        wakeups = follower.subscribe()
        await wakeups.wait()
        await listening(pool, follower)
        async with pool.acquire() as conn:
            appended = await append_key(conn, f"org_{uuid.uuid4().hex[:8]}", "woken")
        async with asyncio.timeout(WITHIN):
            while await wakeups.wait() < appended.position:
                pass


async def test_a_payload_that_is_not_a_position_neither_breaks_nor_moves_the_head(
    database_url: str, pool: asyncpg.Pool
) -> None:
    async with a_follower(database_url) as follower:
        follower.wake(7)
        wakeups = follower.subscribe()
        await listening(pool, follower)
        for payload in ("not-a-position", "", "-3", "9" * 40 + "x"):
            await notify(pool, payload)
        assert follower.head == 7
        await notify(pool, "8")  # the listener survived them
        async with asyncio.timeout(WITHIN):
            while await wakeups.wait() != 8:
                pass


async def test_a_lower_position_never_moves_the_head_back(database_url: str) -> None:
    follower = a_follower(database_url)
    for position in (5, 9, 3, None):
        follower.wake(position)
    assert follower.head == 9


@pytest.mark.parametrize("kills", [1, 3])
async def test_the_listener_reconnects_after_pg_terminate_backend(
    database_url: str, pool: asyncpg.Pool, kills: int
) -> None:
    heads: list[int] = []

    async def step(head: int) -> None:
        heads.append(head)

    async with a_follower(database_url) as follower, following(follower, step):
        await listening(pool, follower)
        for kill in range(kills):
            steps = len(heads)
            pid = await kill_listener(pool, follower.application_name)

            async def replaced(pid: int = pid) -> bool:
                pids = await listener_pids(pool, follower)
                return follower.listening and len(pids) == 1 and pids != [pid]

            await eventually(replaced, within=WITHIN, what="a new LISTEN connection")
            # Reconnecting wakes the consumer (nothing notified, the poll is an hour):
            # appends made while nobody listened notified nobody.
            await eventually(_true_when(lambda steps=steps: len(heads) > steps), what="a wake-up")
            await notify(pool, str(100 + kill))
            await eventually(
                _true_when(lambda kill=kill: heads[-1] == 100 + kill), what="the NOTIFY"
            )


async def test_a_database_that_refuses_connections_is_retried_without_stopping(
    database_url: str,
) -> None:
    nowhere = database_url.rsplit("/", 1)[0] + f"/missing_{uuid.uuid4().hex[:8]}"
    async with a_follower(nowhere) as follower:
        wakeups = follower.subscribe()
        await wakeups.wait()
        follower.wake(3)  # in-process wake-ups still work without a listener
        async with asyncio.timeout(WITHIN):
            assert await wakeups.wait() == 3
        assert not follower.listening
        assert follower._task is not None and not follower._task.done()


async def test_the_poll_wakes_a_consumer_when_nothing_notifies(database_url: str) -> None:
    follower = a_follower(database_url, poll_seconds=0.01)  # never started: no LISTEN at all
    steps = 0
    enough = asyncio.Event()

    async def step(_head: int) -> None:
        nonlocal steps
        steps += 1
        if steps == 3:
            enough.set()

    async with following(follower, step), asyncio.timeout(WITHIN):
        await enough.wait()
    assert follower._subscribers == set()  # following cleaned up after itself


async def test_a_wake_during_a_step_is_kept_for_the_next_wait(database_url: str) -> None:
    follower = a_follower(database_url)
    heads: list[int] = []
    second = asyncio.Event()

    async def step(head: int) -> None:
        heads.append(head)
        if len(heads) == 1:
            follower.wake(11)  # arrives while this step is still busy
        else:
            second.set()

    async with following(follower, step), asyncio.timeout(WITHIN):
        await second.wait()
    assert heads == [0, 11]


async def test_a_failing_step_is_retried_and_a_fatal_one_ends_following(
    database_url: str,
) -> None:
    follower = a_follower(database_url)
    calls = 0

    class Broken(Exception):
        pass

    class Fatal(Exception):
        pass

    async def step(_head: int) -> None:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise Broken(f"attempt {calls}")
        raise Fatal

    async with asyncio.timeout(WITHIN):
        with pytest.raises(Fatal):
            await follower.follow(step, what="test", fatal=(Fatal,))
    assert calls == 4  # three failures retried without any wake-up or poll


async def test_a_follower_can_be_stopped_and_started_again(
    database_url: str, pool: asyncpg.Pool
) -> None:
    follower = a_follower(database_url)
    wakeups = follower.subscribe()
    await wakeups.wait()
    for round_ in range(2):
        follower.start()
        await listening(pool, follower)
        await notify(pool, str(50 + round_))
        async with asyncio.timeout(WITHIN):
            while await wakeups.wait() != 50 + round_:
                pass
        await follower.stop()
        assert not follower.listening

        async def closed() -> bool:
            return await listener_pids(pool, follower) == []

        await eventually(closed, within=WITHIN, what="the LISTEN connection to close")


async def test_the_projection_runner_follows_the_log_after_its_listener_is_killed(
    database_url: str, pool: asyncpg.Pool
) -> None:
    runner = ProjectionRunner(pool, database_url, [KeyViews()], fallback_poll_seconds=NEVER)
    await runner.start()
    try:
        await kill_listener(pool, "keyledger projections listener")
        async with pool.acquire() as conn:
            appended = await append_key(conn, f"org_{uuid.uuid4().hex[:8]}", "after")

        async def applied() -> bool:
            return runner.position(KEY_VIEWS) >= appended.position

        await eventually(applied, within=WITHIN, what="the projection to apply the append")
    finally:
        await runner.stop()


async def test_the_index_feed_follows_the_log_after_its_listener_is_killed(
    database_url: str, pool: asyncpg.Pool
) -> None:
    index = VerificationIndex()
    feed = IndexFeed(index, pool, database_url, poll_interval=NEVER)
    await feed.start()
    try:
        await kill_listener(pool, "keyledger verification-index listener")
        async with pool.acquire() as conn:
            appended = await append_key(conn, f"org_{uuid.uuid4().hex[:8]}", "after")

        async def applied() -> bool:
            return index.position >= appended.position

        await eventually(applied, within=WITHIN, what="the index to apply the append")
        assert index.by_key_id(appended.key_id) is not None
    finally:
        await feed.stop()
