"""Pepper rules: a minimum length, and a fingerprint that never reveals the pepper."""

from __future__ import annotations

import secrets

import pytest

from service.settings import MIN_PEPPER_LENGTH, Settings, SettingsError
from service.store.pepper_fingerprint import pepper_fingerprint


@pytest.mark.parametrize(
    "pepper", ["Q", "secret-pepper-16", "p" * (MIN_PEPPER_LENGTH - 1), " " * 31, "é" * 31]
)
def test_a_short_pepper_is_refused_without_echoing_it(pepper: str) -> None:
    with pytest.raises(RuntimeError) as refused:
        Settings(pepper=pepper).pepper_bytes  # noqa: B018
    message = str(refused.value)
    assert "KEYLEDGER_PEPPER is too short" in message and f"at least {MIN_PEPPER_LENGTH}" in message
    assert "\n" not in message
    if pepper.strip():
        assert pepper not in message and pepper[:3] not in message


@pytest.mark.parametrize("pepper", [None, ""])
def test_a_missing_pepper_is_refused(pepper: str | None) -> None:
    with pytest.raises(SettingsError, match=r"^missing settings: KEYLEDGER_PEPPER$"):
        Settings(pepper=pepper).pepper_bytes  # noqa: B018


@pytest.mark.parametrize("pepper", ["p" * MIN_PEPPER_LENGTH, secrets.token_hex(32), "é" * 32])
def test_a_long_enough_pepper_is_accepted(pepper: str) -> None:
    assert Settings(pepper=pepper).pepper_bytes == pepper.encode()


def test_the_dev_pepper_is_long_enough(tmp_path: object) -> None:
    from pathlib import Path

    from service.cli.dev_folder import pepper

    made = pepper(Path(str(tmp_path)), create=True)
    assert made is not None and len(made) >= MIN_PEPPER_LENGTH
    assert Settings(pepper=made).pepper_bytes


def test_the_fingerprint_is_stable_per_pepper_and_hides_it() -> None:
    pepper = secrets.token_hex(32).encode()
    assert pepper_fingerprint(pepper) == pepper_fingerprint(pepper)
    assert pepper_fingerprint(pepper) != pepper_fingerprint(pepper + b"x")
    assert pepper_fingerprint(pepper) != pepper_fingerprint(pepper[:-1])
    assert pepper.decode() not in pepper_fingerprint(pepper)
    assert len(pepper_fingerprint(pepper)) == 64
