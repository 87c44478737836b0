"""`events/` is the contract other services import: it must not need keyledger's service."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Runs in a fresh interpreter where importing service/ or projections/ fails loudly.
_PROBE = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class Forbid(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {"service", "projections"}:
                raise ImportError(f"events/ imported {name}")
            return None

    sys.meta_path.insert(0, Forbid())
    import events, events.codec, events.models, events.servers, events.subjects, events.subscriber
    print("ok")
    """
)


def test_events_imports_without_service_or_projections() -> None:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_probe_does_catch_a_forbidden_import() -> None:
    probe = _PROBE.replace('print("ok")', "import service.settings")
    result = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode != 0 and "imported service" in result.stderr
