"""Provisioning of the JetStream stream every event is published to.

Its name, subjects and headers: docs/events.md#nats-stream-subjects-headers.

The stream is created when missing, with ``KEYLEDGER_NATS_STREAM_REPLICAS``
copies (docs/security.md §9). An existing stream whose configuration differs
from what keyledger needs is reported, never recreated: recreating would throw away
every stored message and every consumer's position. A stream with *fewer*
replicas than configured is such a difference (losing one server would stall
publishing, or lose events); more replicas than configured is not.
"""

from __future__ import annotations

from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import StorageType, StreamConfig, StreamInfo
from nats.js.errors import APIError, NotFoundError

from service.settings import Settings

# JetStream's error code for "stream name already in use with a different configuration".
_STREAM_NAME_IN_USE = 10058


class StreamConfigMismatch(RuntimeError):
    """The stream exists with a configuration keyledger cannot publish into safely."""

    def __init__(self, stream: str, differences: dict[str, tuple[object, object]]) -> None:
        self.stream = stream
        self.differences = differences
        described = "; ".join(
            f"{field}: expected {want!r}, found {have!r}"
            for field, (want, have) in differences.items()
        )
        hint = (
            " (JetStream raises replicas in place:"
            f" nats stream edit {stream} --replicas {differences['num_replicas'][0]})"
            if "num_replicas" in differences
            else ""
        )
        super().__init__(
            f"JetStream stream {stream!r} exists with a different configuration ({described});"
            f" fix or delete it by hand{hint}, keyledger never recreates a stream"
        )


@dataclass(frozen=True, slots=True)
class StreamSpec:
    """What keyledger requires of its stream."""

    name: str
    subjects: tuple[str, ...]
    storage: StorageType
    duplicate_window_seconds: float
    replicas: int = 1

    @classmethod
    def from_settings(cls, settings: Settings) -> StreamSpec:
        return cls(
            name=settings.nats_stream,
            subjects=(f"{settings.nats_subject_prefix}.>",),
            storage=StorageType.FILE,
            duplicate_window_seconds=settings.nats_duplicate_window_seconds,
            replicas=settings.nats_stream_replicas,
        )

    def config(self) -> StreamConfig:
        return StreamConfig(
            name=self.name,
            subjects=list(self.subjects),
            storage=self.storage,
            duplicate_window=self.duplicate_window_seconds,
            num_replicas=self.replicas,
        )

    def differences(self, existing: StreamConfig) -> dict[str, tuple[object, object]]:
        """Field → (required, found) for every field that does not match."""
        found: dict[str, tuple[object, object]] = {}
        if sorted(existing.subjects or ()) != sorted(self.subjects):
            found["subjects"] = (list(self.subjects), existing.subjects)
        if existing.storage != self.storage:
            found["storage"] = (self.storage.value, getattr(existing.storage, "value", None))
        # Compared in whole milliseconds: the server stores nanoseconds.
        if round(existing.duplicate_window * 1000) != round(self.duplicate_window_seconds * 1000):
            found["duplicate_window"] = (self.duplicate_window_seconds, existing.duplicate_window)
        # The server omits num_replicas for a single copy.
        if (existing.num_replicas or 1) < self.replicas:
            found["num_replicas"] = (self.replicas, existing.num_replicas or 1)
        return found


async def ensure_stream(js: JetStreamContext, settings: Settings) -> StreamInfo:
    """Create keyledger's stream if missing; raise ``StreamConfigMismatch`` if it differs."""
    spec = StreamSpec.from_settings(settings)
    try:
        info = await js.stream_info(spec.name)
    except NotFoundError:
        try:
            return await js.add_stream(spec.config())
        except APIError as exc:
            # Another replica created it between our lookup and our create.
            if exc.err_code != _STREAM_NAME_IN_USE:
                raise
            info = await js.stream_info(spec.name)
    differences = spec.differences(info.config)
    if differences:
        raise StreamConfigMismatch(spec.name, differences)
    return info
