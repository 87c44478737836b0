"""``LocalVerifier``: bearer secrets verified inside your service, revocations within milliseconds.

    async with KeyledgerClient(url, service_key) as kl, LocalVerifier(kl, nats_url) as verifier:
        result = await verifier.verify(secret, scopes=["orders:write"])

A miss asks keyledger (``POST /v1/verify``); a VALID verdict about a key without
usage limits is then answered from memory. The verifier runs its own JetStream
consumer on the keyledger stream, and any event of a key (revoked, disabled,
rotated, changed…) drops every cached verdict about that key the moment it
arrives. The cache is trusted only while that consumer is provably live: it
asks for an idle heartbeat every ``heartbeat`` seconds, so a healthy consumer
hears something at least that often. After ``silence_limit`` seconds with
nothing heard (NATS down, the connection cut, the consumer gone), or a hole in
its delivery sequence, every cached verdict is dropped and every verify goes to
keyledger until the consumer is live again (re-created when it was lost).

Cache hits are reported in batches (``UsageReports``) so ``last_used_at`` stays true.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy
from nats.js.errors import NotFoundError

from keyledger_client.client import KeyledgerClient
from keyledger_client.events.servers import nats_servers, shown_servers
from keyledger_client.events.subjects import DEFAULT_PREFIX, DEFAULT_STREAM, subject_filter
from keyledger_client.models import VerifyResult
from keyledger_client.usage_reports import UsageReports
from keyledger_client.verdict_cache import VerdictCache, cache_key

log = logging.getLogger(__name__)
_HEARTBEAT_STATUS = "100"
_STREAM_NOT_FOUND = 10059  # JetStream's error code for a stream it does not have


class LocalVerifier:
    """Verifies bearer secrets from an in-process cache that events keep true."""

    def __init__(
        self,
        client: KeyledgerClient,
        nats_url: str,
        *,
        org_id: str | None = None,
        stream: str = DEFAULT_STREAM,
        subject_prefix: str = DEFAULT_PREFIX,
        heartbeat: float = 0.5,
        silence_limit: float = 2.0,
        connect_timeout: float = 2.0,
        usage_interval: float = 10.0,
        cache: VerdictCache | None = None,
        on_event: Callable[[str, int], None] | None = None,
    ) -> None:
        self.client = client
        self.nats_url = nats_url
        self.stream = stream
        self.subject = subject_filter(org_id=org_id, prefix=subject_prefix)
        self.heartbeat = heartbeat
        self.silence_limit = silence_limit
        # How long ``start`` waits for NATS (and an attempt to connect may take).
        self.connect_timeout = connect_timeout
        self.cache = cache or VerdictCache()
        # Told (key id, log position) once an event has dropped that key's verdicts.
        self.on_event = on_event
        self._nc: NATS | None = None
        self._sub: Subscription | None = None
        self._consumer: str | None = None
        self._heard_at = float("-inf")  # monotonic time of the last message from the consumer
        self._delivered = 0  # the consumer's delivery sequence seen last
        self._position = 0  # the highest log position seen on the consumer
        self.usage = UsageReports(client, usage_interval)
        self._tasks: list[asyncio.Task[None]] = []
        self._advanced = asyncio.Event()  # set (and replaced) whenever ``_position`` moves
        self._nats_trouble: str | None = None  # the last NATS error logged (None: connected)
        self._consumer_trouble: Exception | None = None  # why the last consumer did not open

    # -- lifecycle ----------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect to NATS and open the consumer, within ``connect_timeout`` seconds; start
        the watchdog and the usage reports.

        NATS not reached by then is no error: until it is (the connection keeps being tried
        in the background), every verify asks keyledger, as when NATS goes away later.
        A stream that NATS does not have raises ``LookupError`` naming it: no consumer
        could ever be opened, and the cache would never be used."""
        servers = nats_servers(self.nats_url)  # InvalidServerList here, not in a task
        self._nc = NATS()
        # First in ``_tasks``: the watchdog leaves the consumer to it until it is done.
        connecting = asyncio.create_task(self._connect(servers), name="keyledger-verifier-connect")
        self._tasks = [
            connecting,
            asyncio.create_task(self._watch(), name="keyledger-verifier-watchdog"),
            asyncio.create_task(self.usage.run(), name="keyledger-verifier-usage"),
        ]
        await asyncio.wait({connecting}, timeout=self.connect_timeout)
        if isinstance(self._consumer_trouble, LookupError):
            await self.stop()
            raise self._consumer_trouble
        if not connecting.done():
            log.warning(
                "keyledger_verifier_not_live: NATS %s not reached within %s s; verifying every "
                "key with keyledger until it is (still trying)",
                self.servers_shown,
                self.connect_timeout,
            )

    async def _connect(self, servers: list[str]) -> None:
        """Connect (trying again for as long as it takes), then open the consumer; what goes
        wrong is logged, and the watchdog opens the consumer later if it could not now."""
        assert self._nc is not None
        # nats-py types these int; floats are what its asyncio timeouts take anyway.
        timing: dict[str, Any] = {
            "reconnect_time_wait": 0.5,
            "connect_timeout": self.connect_timeout,
        }
        await self._nc.connect(
            servers=servers,
            max_reconnect_attempts=-1,
            disconnected_cb=self._on_disconnected,
            reconnected_cb=self._on_reconnected,
            error_cb=self._on_error,
            **timing,
        )
        self._nats_trouble = None
        log.info("keyledger_verifier_connected: NATS %s", self.servers_shown)
        await self._try_open_consumer()

    async def stop(self) -> None:
        """Stop the tasks, report the last uses and close the NATS connection."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        with contextlib.suppress(Exception):
            await self.flush_usage()
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._close_consumer()
            with contextlib.suppress(Exception):  # never connected: nothing to close
                await self._nc.close()
            self._nc = None

    @property
    def servers_shown(self) -> str:
        """The NATS servers, as logs name them: without credentials."""
        return shown_servers(self.nats_url)

    # -- verification -------------------------------------------------------------

    @property
    def trusted(self) -> bool:
        """Whether cached verdicts may be answered: the consumer was heard from lately."""
        nc = self._nc
        return (
            nc is not None
            and nc.is_connected
            and time.monotonic() - self._heard_at <= self.silence_limit
        )

    async def verify(
        self,
        secret: str,
        *,
        scopes: Sequence[str] = (),
        origin: str | None = None,
        resource: str | None = None,
        environment: str | None = None,
        ip: str | None = None,
        cost: int = 1,
    ) -> VerifyResult:
        """The verdict on ``secret`` for these requirements, as ``KeyledgerClient.verify``
        answers it: from the cache when it may, else from keyledger.

        ``ip``: the calling client's address, for keys with an IP allowlist (verdicts are
        cached per address). ``cost``: what the request spends of the key's rate limits
        and credits; keys with either are never cached, so any other cost than 1 always
        asks keyledger.
        """
        key = cache_key(secret, tuple(scopes), origin, resource, environment, ip)
        trusted, cached_cost = self.trusted, cost == 1
        if trusted and cached_cost:
            cached = self.cache.get(key, time.monotonic(), datetime.now(UTC))
            if cached is not None and cached.key is not None:
                self.usage.note(cached.key.id)
                return cached
        elif not trusted and len(self.cache):
            self.cache.clear()
        since = self.cache.events_seen
        result = await self.client.verify(
            key=secret,
            scopes=list(scopes) or None,
            origin=origin,
            resource=resource,
            environment=environment,
            ip=ip,
            cost=None if cost == 1 else cost,
            # Never an answer older than what this verifier has already seen evicted.
            min_position=self._position or None,
        )
        if trusted and cached_cost and self.trusted:
            self.cache.store(key, result, time.monotonic(), since)
        return result

    # -- the consumer -------------------------------------------------------------

    async def _try_open_consumer(self) -> None:
        """Open a consumer; on failure log why (once per new cause) and keep the cause."""
        try:
            await self._open_consumer()
        except Exception as exc:
            trouble = (
                LookupError(
                    f"NATS {self.servers_shown} has no JetStream stream {self.stream!r}: "
                    "give LocalVerifier the stream keyledger publishes to (stream=, "
                    "keyledger's KEYLEDGER_NATS_STREAM)"
                )
                if isinstance(exc, NotFoundError) and exc.err_code == _STREAM_NOT_FOUND
                else exc
            )
            if str(trouble) != str(self._consumer_trouble):
                log.error(
                    "keyledger_verifier_consumer_failed: stream %r on NATS %s: %s: %s",
                    self.stream,
                    self.servers_shown,
                    type(trouble).__name__,
                    trouble,
                )
            self._consumer_trouble = trouble
            with contextlib.suppress(Exception):
                await self._close_consumer()
        else:
            self._consumer_trouble = None

    async def _open_consumer(self) -> None:
        assert self._nc is not None
        inbox = self._nc.new_inbox()
        # A new consumer numbers its deliveries from 1, possibly before add_consumer returns.
        self._delivered = 0
        self._sub = await self._nc.subscribe(inbox, cb=self._on_message)
        info = await self._nc.jetstream().add_consumer(
            self.stream,
            ConsumerConfig(
                deliver_subject=inbox,
                deliver_policy=DeliverPolicy.NEW,
                ack_policy=AckPolicy.NONE,
                filter_subject=self.subject,
                idle_heartbeat=self.heartbeat,
                # Gone by itself when this process dies without stopping.
                inactive_threshold=max(30.0, self.silence_limit * 5),
                mem_storage=True,
            ),
        )
        self._consumer = info.name
        # Live from now on: events before this moment are what keyledger answers with.
        self._heard_at = time.monotonic()

    async def _close_consumer(self) -> None:
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
            self._sub = None
        if self._consumer is not None and self._nc is not None and self._nc.is_connected:
            with contextlib.suppress(Exception):
                await self._nc.jetstream().delete_consumer(self.stream, self._consumer)
        self._consumer = None

    async def _on_message(self, msg: Msg) -> None:
        self._heard_at = time.monotonic()
        headers = msg.headers or {}
        if headers.get("Status") == _HEARTBEAT_STATUS:
            # A heartbeat names the consumer's last delivery: more than we saw is a lost event.
            last = headers.get("Nats-Last-Consumer")
            if last is not None and last.isdigit() and int(last) != self._delivered:
                self._lost("a heartbeat names deliveries this verifier never got")
            return
        try:
            delivered = msg.metadata.sequence.consumer
        except Exception:
            self._lost("a message without JetStream metadata")
            return
        if delivered != self._delivered + 1:
            self._lost("a hole in the delivery sequence")
        self._delivered = delivered
        key_id = msg.subject.split(".")[-2] if msg.subject.count(".") >= 2 else ""
        self.cache.note_event(key_id)
        position = _position_of(msg.data)
        if self.on_event is not None:
            self.on_event(key_id, position)
        if position > self._position:
            self._position = position
            self._advanced.set()
            self._advanced = asyncio.Event()

    @property
    def consumer_name(self) -> str | None:
        """The name of this verifier's JetStream consumer on the server (None: none yet)."""
        return self._consumer

    @property
    def position(self) -> int:
        """The highest log position this verifier has seen an event of (0: none yet)."""
        return self._position

    async def wait_for_position(self, position: int, within: float = 5.0) -> bool:
        """Wait until the event at ``position`` (a command's ``position``) has reached this
        verifier, so no verdict it caches predates it; False after ``within`` seconds."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while self._position < position:
                    await self._advanced.wait()
        return self._position >= position

    def _lost(self, why: str) -> None:
        log.warning("keyledger_verifier_cache_dropped: %s", why, extra={"why": why})
        self.cache.clear()

    async def _on_disconnected(self) -> None:
        self.cache.clear()
        log.warning(
            "keyledger_verifier_nats_disconnected: NATS %s; verifying every key with "
            "keyledger until it is back",
            self.servers_shown,
            extra={"nats": self.servers_shown},
        )

    async def _on_reconnected(self) -> None:
        # Deliveries while away are lost for good (no acks): start clean.
        self.cache.clear()
        self._nats_trouble = None
        log.info("keyledger_verifier_nats_reconnected: NATS %s", self.servers_shown)

    async def _on_error(self, exc: Exception) -> None:
        # Called at every failed attempt (twice a second while NATS is down): a warning
        # when the cause changes, the repeats at debug level.
        cause = f"{type(exc).__name__}: {exc}"
        level = logging.DEBUG if cause == self._nats_trouble else logging.WARNING
        self._nats_trouble = cause
        log.log(
            level,
            "keyledger_verifier_nats_error: NATS %s: %s",
            self.servers_shown,
            cause,
            extra={"nats": self.servers_shown, "error": cause},
        )

    async def _watch(self) -> None:
        """Re-create the consumer after a silence (the server lost it, or NATS came back)."""
        while True:
            await asyncio.sleep(self.heartbeat)
            nc = self._nc
            connecting = self._tasks[0] if self._tasks else None
            if nc is None or not nc.is_connected or self.trusted:
                continue
            if connecting is not None and not connecting.done():
                continue  # the first consumer is being opened: not a second one
            self.cache.clear()
            with contextlib.suppress(Exception):
                await self._close_consumer()
            await self._try_open_consumer()  # NATS not answering yet: again next round

    # -- usage --------------------------------------------------------------------

    async def flush_usage(self) -> int:
        """Report the uses answered from the cache since the last report; how many keys."""
        return await self.usage.flush()


def _position_of(data: bytes) -> int:
    try:
        envelope: Any = json.loads(data)
        position = envelope.get("position") if isinstance(envelope, dict) else None
    except ValueError:
        return 0
    return position if isinstance(position, int) else 0
