"""What keyledger requires of its JetStream stream, compared with what exists (pure)."""

from __future__ import annotations

from nats.js.api import StorageType, StreamConfig

from service.outbox.stream import StreamConfigMismatch, StreamSpec
from service.settings import Settings


def spec() -> StreamSpec:
    return StreamSpec.from_settings(Settings(nats_duplicate_window_seconds=120))


def test_the_spec_follows_the_settings() -> None:
    config = spec().config()
    assert config.name == "KEYLEDGER"
    assert config.subjects == ["keyledger.events.>"]
    assert config.storage == StorageType.FILE
    assert config.duplicate_window == 120


def test_a_matching_stream_has_no_differences() -> None:
    assert spec().differences(spec().config()) == {}


def test_every_differing_field_is_named() -> None:
    existing = StreamConfig(
        name="KEYLEDGER", subjects=["other.>"], storage=StorageType.MEMORY, duplicate_window=60
    )
    differences = spec().differences(existing)
    assert set(differences) == {"subjects", "storage", "duplicate_window"}
    message = str(StreamConfigMismatch("KEYLEDGER", differences))
    assert "duplicate_window: expected 120.0, found 60" in message
    assert "never recreates" in message


def test_the_stream_gets_the_configured_replicas() -> None:
    assert spec().config().num_replicas == 1
    three = StreamSpec.from_settings(Settings(nats_stream_replicas=3))
    assert three.config().num_replicas == 3


def test_a_stream_with_fewer_replicas_is_a_difference_and_says_how_to_fix_it() -> None:
    three = StreamSpec.from_settings(Settings(nats_stream_replicas=3))
    for found in (1, 2, None):  # the server leaves num_replicas out for one copy
        existing = three.config()
        existing.num_replicas = found
        assert three.differences(existing) == {"num_replicas": (3, found or 1)}
    message = str(StreamConfigMismatch("KEYLEDGER", {"num_replicas": (3, 1)}))
    assert "num_replicas: expected 3, found 1" in message
    assert "nats stream edit KEYLEDGER --replicas 3" in message


def test_a_stream_with_more_replicas_than_configured_is_fine() -> None:
    existing = spec().config()
    existing.num_replicas = 3
    assert spec().differences(existing) == {}
