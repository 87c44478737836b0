"""React to revoked keys: evict them from this service's own cache of verified keys.

Run:    python examples/revocation_listener.py --nats nats://127.0.0.1:4222
        (on a cluster: --nats nats://n1:4222,nats://n2:4222,nats://n3:4222)
Then:   revoke a key (POST /v1/orgs/{org}/keys/{id}/revoke); this prints `evicted key_…`.
Needs:  only `events/` and nats-py from keyledger, never `service/` or `projections/`.
Durable: restart it and it resumes after the last event it acknowledged (--durable NAME).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal

import nats

from events.models import Envelope, KeyEvent, KeyRevoked
from events.servers import nats_servers
from events.subjects import DEFAULT_PREFIX, DEFAULT_STREAM, subject_filter
from events.subscriber import EventConsumer


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

    async def on_revoked(envelope: Envelope, event: KeyEvent) -> None:
        if not isinstance(event, KeyRevoked):  # the subject filter already ensures it
            return
        was_cached = cache.evict(event.key_id)
        print(
            f"evicted {event.key_id} (org {event.org_id}, reason {event.reason},"
            f" position {envelope.position}, cached before: {was_cached})",
            flush=True,
        )

    nc = await nats.connect(
        servers=nats_servers(nats_url), max_reconnect_attempts=-1, name="revocation-listener"
    )
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
    try:
        await consumer.run()
    finally:
        await nc.drain()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--nats",
        default="nats://127.0.0.1:4222",
        help="a NATS server, or a comma-separated list of a cluster's servers",
    )
    parser.add_argument("--durable", default="revocation-listener")
    parser.add_argument("--stream", default=DEFAULT_STREAM)
    parser.add_argument("--prefix", default=DEFAULT_PREFIX)
    args = parser.parse_args()
    asyncio.run(listen(args.nats, args.durable, args.stream, args.prefix))


if __name__ == "__main__":
    main()
