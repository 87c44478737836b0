"""Settings from the environment: NATS server lists, stream replicas, errors by variable name."""

from __future__ import annotations

import pytest

from service.settings import Settings, SettingsError


def test_a_server_list_is_kept_normalised_and_split_for_nats_py() -> None:
    settings = Settings.from_env({"KEYLEDGER_NATS_URL": " nats://n1:4222 , n2:4222,n3 "})
    assert settings.nats_url == "nats://n1:4222,nats://n2:4222,nats://n3"
    assert settings.nats_servers == ["nats://n1:4222", "nats://n2:4222", "nats://n3"]


@pytest.mark.parametrize("blank", ["", "  "])
def test_a_blank_nats_url_means_no_nats(blank: str) -> None:
    settings = Settings.from_env({"KEYLEDGER_NATS_URL": blank})
    assert settings.nats_url is None and settings.nats_servers == []


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("nats://n1:4222,,nats://n3:4222", "entry 2 of 3 is empty"),
        ("nats://n1:4222 nats://n2:4222", "contains whitespace"),
        ("http://n1:4222", "scheme"),
        ("nats://n1:70000", "port"),
    ],
)
def test_a_bad_server_list_is_a_settings_error_naming_the_variable(value: str, reason: str) -> None:
    with pytest.raises(SettingsError, match=f"KEYLEDGER_NATS_URL: .*{reason}"):
        Settings.from_env({"KEYLEDGER_NATS_URL": value})


def test_stream_replicas_default_to_one_and_take_up_to_five() -> None:
    assert Settings.from_env({}).nats_stream_replicas == 1
    assert Settings.from_env({"KEYLEDGER_NATS_STREAM_REPLICAS": "3"}).nats_stream_replicas == 3
    assert Settings.from_env({"KEYLEDGER_NATS_STREAM_REPLICAS": "5"}).nats_stream_replicas == 5


@pytest.mark.parametrize("value", ["0", "6", "-1", "three"])
def test_stream_replicas_out_of_range_are_refused(value: str) -> None:
    with pytest.raises(SettingsError, match="KEYLEDGER_NATS_STREAM_REPLICAS"):
        Settings.from_env({"KEYLEDGER_NATS_STREAM_REPLICAS": value})


def test_every_invalid_variable_is_named_and_no_value_is_repeated() -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(
            {
                "KEYLEDGER_PORT": "sk_live_notaport",
                "KEYLEDGER_NATS_URL": "nats://alice:hunter2@n1:port",
                "KEYLEDGER_NATS_STREAM_REPLICAS": "9",
            }
        )
    message = str(raised.value)
    for variable in ("KEYLEDGER_PORT", "KEYLEDGER_NATS_URL", "KEYLEDGER_NATS_STREAM_REPLICAS"):
        assert variable in message
    assert "sk_live_notaport" not in message and "hunter2" not in message
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
