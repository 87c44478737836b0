"""KEYLEDGER_EVENT_LOOP: auto takes uvloop when installed; uvloop insists on it."""

from __future__ import annotations

import asyncio
import sys

import pytest

from service.event_loop import loop_factory, resolved_loop
from service.settings import Settings, SettingsError


def test_the_setting_takes_three_words() -> None:
    assert Settings.from_env({}).event_loop == "auto"
    assert Settings.from_env({"KEYLEDGER_EVENT_LOOP": "uvloop"}).event_loop == "uvloop"
    with pytest.raises(SettingsError, match="KEYLEDGER_EVENT_LOOP"):
        Settings.from_env({"KEYLEDGER_EVENT_LOOP": "trio"})


def test_with_uvloop_installed_auto_takes_it() -> None:
    pytest.importorskip("uvloop")
    assert resolved_loop("auto") == resolved_loop("uvloop") == "uvloop"
    assert resolved_loop("asyncio") == "asyncio"
    loop = loop_factory("uvloop")()
    try:
        assert type(loop).__module__.startswith("uvloop")
        assert loop.run_until_complete(asyncio.sleep(0, "ran")) == "ran"
    finally:
        loop.close()


def test_without_uvloop_auto_falls_back_and_uvloop_refuses(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "uvloop", None)  # what an import sees when it is absent
    assert resolved_loop("auto") == "asyncio"
    assert loop_factory("auto") is asyncio.new_event_loop
    with pytest.raises(SettingsError, match=r"keyledger\[fast\]"):
        resolved_loop("uvloop")
