"""React to revoked keys: evict them from this service's own cache of verified keys.

Run:    python examples/revocation_listener.py
        (next to a running `keyledger dev`: its NATS URL, stream and subject prefix
        come from .keyledger/dev.json; elsewhere --nats nats://127.0.0.1:4222, or on a
        cluster --nats nats://n1:4222,nats://n2:4222,nats://n3:4222)
Then:   revoke a key (POST /v1/orgs/{org}/keys/{id}/revoke); this prints `evicted key_…`.
Needs:  only the client (`keyledger_client.events`) and nats-py, never keyledger's service.
Durable: restart it and it resumes after the last event it acknowledged (--durable NAME).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import signal
import sys
from pathlib import Path

import nats
import nats.errors

from keyledger_client.events.models import Envelope, KeyRevoked, LogEvent
from keyledger_client.events.servers import nats_servers
from keyledger_client.events.subjects import DEFAULT_PREFIX, DEFAULT_STREAM, subject_filter
from keyledger_client.events.subscriber import EventConsumer

CONNECT_TIMEOUT_SECONDS = 10.0


def dev_running(folder: Path) -> bool:
    """True when a `keyledger dev` holds ``folder``'s lock (an exclusive flock on dev.lock)."""
    try:
        with open(folder / "dev.lock") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except OSError:
        return False


def dev_settings() -> dict[str, str]:
    """The NATS URL, stream and subject prefix of a `keyledger dev` running here, if any."""
    folder = Path(os.environ.get("KEYLEDGER_DATA_DIR", ".keyledger"))
    if not dev_running(folder):
        return {}  # a dev.json left by a killed dev names servers that are gone
    try:
        found = json.loads((folder / "dev.json").read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in found.items() if isinstance(v, str)} if isinstance(found, dict) else {}


class VerifiedKeyCache:
    """Stands in for a downstream service's cache of keys it has already verified."""

    def __init__(self) -> None:
        self.entries: dict[str, dict[str, object]] = {}

    def evict(self, key_id: str) -> bool:
        """Forget ``key_id``; True when it was cached."""
        return self.entries.pop(key_id, None) is not None


async def listen(nats_url: str, durable: str, stream: str, prefix: str) -> None:
    """Evict every revoked key until SIGINT/SIGTERM."""
    cache = VerifiedKeyCache()

    async def on_revoked(envelope: Envelope, event: LogEvent) -> None:
        if not isinstance(event, KeyRevoked):  # the subject filter already ensures it
            return
        was_cached = cache.evict(event.key_id)
        print(
            f"evicted {event.key_id} (org {event.org_id}, reason {event.reason},"
            f" position {envelope.position}, cached before: {was_cached})",
            flush=True,
        )

    async def quiet(_: Exception) -> None:
        """Connection trouble is reported once, by ``main``, not as a traceback per retry."""

    connected = False

    async def lost() -> None:
        # Said once per loss, never silent: revocations are not seen until it is back.
        if connected:
            print(
                f"revocation_listener: lost NATS at {nats_url}; reconnecting (Ctrl-C to stop)",
                file=sys.stderr,
                flush=True,
            )

    async def back() -> None:
        print(
            f"revocation_listener: reconnected to NATS at {nats_url}", file=sys.stderr, flush=True
        )

    # Once connected, reconnect for ever, saying so; but a first connection that is refused
    # is reported and ends the program (nats-py would retry it for ever).
    async with asyncio.timeout(CONNECT_TIMEOUT_SECONDS):
        nc = await nats.connect(
            servers=nats_servers(nats_url),
            max_reconnect_attempts=-1,
            name="revocation-listener",
            error_cb=quiet,
            disconnected_cb=lost,
            reconnected_cb=back,
        )
    connected = True
    consumer = EventConsumer(
        nc.jetstream(),
        durable=durable,
        stream=stream,
        filter_subject=subject_filter(event_type="KeyRevoked", prefix=prefix),
        handler=on_revoked,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, consumer.stop)
    print(f"revocation_listener: listening at {nats_url}", file=sys.stderr, flush=True)
    try:
        await consumer.run()
    finally:
        await nc.drain()


def main() -> int:
    """Parse the arguments and listen; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--nats",
        help="a NATS server, or a comma-separated list of a cluster's servers"
        " (default: KEYLEDGER_NATS_URL, else the `keyledger dev` running in ./.keyledger)",
    )
    parser.add_argument("--durable", default="revocation-listener")
    parser.add_argument("--stream", help=f"default: the dev's stream, else {DEFAULT_STREAM}")
    parser.add_argument(
        "--prefix", help=f"subject prefix (default: the dev's, else {DEFAULT_PREFIX})"
    )
    args = parser.parse_args()
    dev = {} if args.nats else dev_settings()
    nats_url = args.nats or os.environ.get("KEYLEDGER_NATS_URL") or dev.get("nats_url")
    if not nats_url:
        print(
            "revocation_listener: no NATS to listen to: pass --nats, set KEYLEDGER_NATS_URL,"
            " or start `keyledger dev` in this folder",
            file=sys.stderr,
        )
        return 2
    stream = args.stream or os.environ.get("KEYLEDGER_NATS_STREAM") or dev.get("nats_stream")
    prefix = (
        args.prefix
        or os.environ.get("KEYLEDGER_NATS_SUBJECT_PREFIX")
        or dev.get("nats_subject_prefix")
    )
    try:
        asyncio.run(
            listen(nats_url, args.durable, stream or DEFAULT_STREAM, prefix or DEFAULT_PREFIX)
        )
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        print(
            f"revocation_listener: cannot listen at {nats_url} ({type(exc).__name__}): is NATS"
            " running there?",
            file=sys.stderr,
        )
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
