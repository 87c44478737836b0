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
