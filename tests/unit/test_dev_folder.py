"""The dev folder (lock, URLs, pepper, admin key) and where CLI commands take settings from."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from service.cli import dev_folder
from service.cli.command_settings import cli_settings, settings_help
from service.cli.failures import FAILURE_EXIT, USAGE_EXIT, UsageError, one_line
from service.cli.serve import _serving_line
from service.settings import SettingsError

DEV_URLS = {
    "api_url": "http://127.0.0.1:18080",
    "database_url": "postgresql://postgres:@/postgres?host=/tmp/x",
    "nats_url": "nats://127.0.0.1:14222",
    "nats_stream": "DEVSTREAM",
    "nats_subject_prefix": "dev.events",
}


@pytest.fixture(autouse=True)
def no_keyledger_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("KEYLEDGER_"):
            monkeypatch.delenv(name)


def test_a_second_holder_is_refused_naming_the_first(tmp_path: Path) -> None:
    with dev_folder.held(tmp_path, "http://127.0.0.1:18080"):
        with pytest.raises(UsageError) as refused, dev_folder.held(tmp_path, "http://x:1"):
            pytest.fail("a second holder ran")
        message = str(refused.value)
        assert message.startswith("keyledger dev is already running here")
        assert f"pid {os.getpid()}" in message and "http://127.0.0.1:18080" in message
        assert dev_folder.running(tmp_path)
    assert not dev_folder.running(tmp_path)
    # Released: the folder can be held again.
    with dev_folder.held(tmp_path, "http://127.0.0.1:18081"):
        assert dev_folder.running(tmp_path)


def test_urls_are_read_only_while_their_dev_runs(tmp_path: Path) -> None:
    with dev_folder.held(tmp_path, DEV_URLS["api_url"]):
        dev_folder.write_urls(tmp_path, dict(DEV_URLS))
        assert stat.S_IMODE((tmp_path / dev_folder.URLS).stat().st_mode) == 0o600
        assert dev_folder.read_urls(tmp_path) == DEV_URLS
    # The block's end removes dev.json; a stale one left by a killed dev is not believed.
    assert not (tmp_path / dev_folder.URLS).exists()
    (tmp_path / dev_folder.URLS).write_text(json.dumps(DEV_URLS))
    assert dev_folder.read_urls(tmp_path) == {}


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]", '{"nats_url": 5}'])
def test_an_unreadable_dev_json_gives_nothing(tmp_path: Path, content: str) -> None:
    with dev_folder.held(tmp_path, "http://127.0.0.1:1"):
        (tmp_path / dev_folder.URLS).write_text(content)
        assert dev_folder.read_urls(tmp_path) == {}


def test_pepper_and_admin_key_are_made_once_and_private(tmp_path: Path) -> None:
    assert dev_folder.pepper(tmp_path) is None
    made = dev_folder.pepper(tmp_path, create=True)
    assert made is not None and len(made) >= 32
    assert dev_folder.pepper(tmp_path, create=True) == made
    assert dev_folder.stored_admin_key(tmp_path) is None
    dev_folder.store_admin_key(tmp_path, "sk_live_abc")
    assert dev_folder.stored_admin_key(tmp_path) == "sk_live_abc"
    for name in (dev_folder.PEPPER, dev_folder.ADMIN_KEY):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600


def test_commands_take_unset_settings_from_a_running_dev(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KEYLEDGER_DATA_DIR", str(tmp_path))
    pepper = dev_folder.pepper(tmp_path, create=True)
    with dev_folder.held(tmp_path, DEV_URLS["api_url"]):
        dev_folder.write_urls(tmp_path, dict(DEV_URLS))
        settings = cli_settings(["database_url", "pepper"], ["nats_url"])
        assert settings.database_url == DEV_URLS["database_url"]
        assert settings.nats_url == DEV_URLS["nats_url"]
        assert settings.nats_stream == "DEVSTREAM"
        assert settings.nats_subject_prefix == "dev.events"
        assert settings.pepper is not None and settings.pepper.get_secret_value() == pepper
        # A setting that is set wins over the folder.
        monkeypatch.setenv("KEYLEDGER_DATABASE_URL", "postgresql://elsewhere/db")
        assert cli_settings(["database_url"]).database_url == "postgresql://elsewhere/db"
        # serve never reads the folder.
        with pytest.raises(SettingsError, match="KEYLEDGER_PEPPER"):
            cli_settings(["database_url", "pepper"], from_dev=False)


@pytest.mark.parametrize(
    ("needs", "named"),
    [
        (["database_url"], "KEYLEDGER_DATABASE_URL"),
        (["database_url", "pepper"], "KEYLEDGER_DATABASE_URL, KEYLEDGER_PEPPER"),
        (["database_url", "nats_url"], "KEYLEDGER_DATABASE_URL, KEYLEDGER_NATS_URL"),
        (["nats_url"], "KEYLEDGER_NATS_URL"),
    ],
)
def test_every_missing_setting_is_named_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, needs: list[str], named: str
) -> None:
    monkeypatch.setenv("KEYLEDGER_DATA_DIR", str(tmp_path))
    with pytest.raises(SettingsError) as missing:
        cli_settings(needs)
    assert str(missing.value).startswith(f"missing settings: {named} (")
    assert "keyledger dev" in str(missing.value)
    assert all(variable in settings_help(needs) for variable in named.split(", "))


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (SettingsError("invalid settings: KEYLEDGER_PORT: bad"), USAGE_EXIT),
        (UsageError("cannot listen on 127.0.0.1:8080"), USAGE_EXIT),
        (RuntimeError("audit repair refused: x\nsecond line"), FAILURE_EXIT),
        (ValueError("surprise\nwith more"), FAILURE_EXIT),
        (KeyError(), FAILURE_EXIT),
    ],
)
def test_every_failure_is_one_line_with_its_exit_code(error: Exception, code: int) -> None:
    message, exit_code = one_line(error)
    assert exit_code == code and message and "\n" not in message
    if not isinstance(error, RuntimeError):
        assert type(error).__name__ in message and "--debug" in message


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (
            "======== Running on http://127.0.0.1:8080 ========\n(Press CTRL+C to quit)",
            "keyledger serving on http://127.0.0.1:8080",
        ),
        (
            "======== Running on http://0.0.0.0:41234 ========",
            "keyledger serving on http://0.0.0.0:41234",
        ),
    ],
)
def test_serve_announces_the_address_it_listens_on(text: str, line: str) -> None:
    assert _serving_line(text) == line
