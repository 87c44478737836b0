"""keyledger_client is a distribution of its own: nothing of the service, no generic names."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.unit.test_layers import files_under, imports_of, under

ROOT = Path(__file__).resolve().parents[2]
# Top-level names the service's distribution installs, or that any project may have.
GENERIC = {"service", "events", "projections", "tests", "bench", "examples"}
_JUNK = shutil.ignore_patterns("__pycache__", "build", "*.egg-info")

# A fresh interpreter in which importing any of them fails loudly.
_PROBE = textwrap.dedent(
    """
    import importlib.abc
    import sys

    class Forbid(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {forbidden!r}:
                raise ImportError(f"keyledger_client imported {{name}}")
            return None

    sys.meta_path.insert(0, Forbid())
    import keyledger_client, keyledger_client.events, keyledger_client.events.subscriber
    from keyledger_client import LocalVerifier, SyncKeyledgerClient, sign_request
    from keyledger_client.events import KeyRevoked, decode
    from keyledger_client.asgi import KeyledgerAuth
    print("ok")
    """
)


def probe(forbidden: set[str], extra: str = "") -> subprocess.CompletedProcess[str]:
    code = _PROBE.format(forbidden=sorted(forbidden)).replace('print("ok")', extra + 'print("ok")')
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_the_client_imports_nothing_of_the_service() -> None:
    result = probe(GENERIC)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_asgi_middleware_needs_no_web_framework() -> None:
    # Plain ASGI: FastAPI and Starlette services use it without the client requiring them.
    result = probe(GENERIC | {"starlette", "fastapi", "uvicorn", "anyio"})
    assert result.returncode == 0, result.stderr


def test_the_probe_does_catch_a_forbidden_import() -> None:
    result = probe(GENERIC, "import events\n")
    assert result.returncode != 0 and "keyledger_client imported events" in result.stderr


def test_no_module_of_the_client_names_another_top_level_package_of_the_repo() -> None:
    wrong = [
        str(found)
        for found in imports_of(files_under("keyledger_client"))
        if any(under(found.target, name) for name in GENERIC)
    ]
    assert wrong == []


def test_events_is_the_client_contract_under_its_older_name() -> None:
    import events
    import events.codec
    import events.models
    import keyledger_client.events as contract
    import keyledger_client.events.codec
    import keyledger_client.events.models

    # One definition: the very same modules and classes, not copies.
    assert events.models is keyledger_client.events.models
    assert events.codec is keyledger_client.events.codec
    assert events.KeyRevoked is contract.KeyRevoked
    assert set(events.__all__) == set(contract.__all__)
    assert not (ROOT / "events" / "models.py").exists()


@pytest.mark.slow
def test_installing_the_client_alone_brings_no_generic_top_level_name(tmp_path: Path) -> None:
    """A fresh venv, ``pip install ./clients/python`` (pip as configured on this machine)."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    python = str(venv / "bin" / "python")
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout.strip()
    before = {p.name for p in Path(site).iterdir()}
    # A copy of what the build reads, so no build folder is left in (or reused from) the repo.
    copy = tmp_path / "repo"
    shutil.copytree(ROOT / "clients" / "python", copy / "clients" / "python", ignore=_JUNK)
    shutil.copytree(ROOT / "keyledger_client", copy / "keyledger_client", ignore=_JUNK)
    done = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", str(copy / "clients" / "python")],
        capture_output=True,
        text=True,
        timeout=400,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    added = {Path(name).stem for name in {p.name for p in Path(site).iterdir()} - before}
    assert "keyledger_client" in added
    assert not added & GENERIC, added & GENERIC
    record = next(Path(site).glob("keyledger_client-*.dist-info")) / "RECORD"
    tops = {line.split("/")[0] for line in record.read_text().splitlines() if "/" in line}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"keyledger_client"}
    # It works there, on its own: outside the repository, nothing of the service to find.
    works = subprocess.run(
        [python, "-c", _PROBE.format(forbidden=sorted(GENERIC)) + _DECODE],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert works.returncode == 0, works.stderr
    assert works.stdout.split() == ["ok", "KeyRevoked", "True"]


_DECODE = textwrap.dedent(
    """
    envelope = (
        '{"event_id": "6f1c2a9e-1d2b-4c3d-8e4f-5a6b7c8d9e0f", "event_type": "KeyRevoked",'
        ' "schema_version": 1, "org_id": "acme", "key_id": "key_01JD0000000000000000000000",'
        ' "stream_version": 2, "position": 9, "occurred_at": "2026-01-01T00:00:00.000000Z",'
        ' "actor": {"id": "key_01JD0000000000000000000001"}, "data": {"reason": "leaked"},'
        ' "hash": "00", "a_future_field": 1}'
    )
    _, event = decode(envelope.encode())
    print(type(event).__name__, isinstance(event, KeyRevoked))
    """
)


def test_the_client_distribution_names_every_package_of_the_client() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "clients" / "python" / "pyproject.toml").read_text())
    named = set(config["tool"]["setuptools"]["packages"])
    found = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "keyledger_client").rglob("__init__.py")
    }
    assert named == found
