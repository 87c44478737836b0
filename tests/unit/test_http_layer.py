"""HTTP stays an entrypoint: handlers never reach storage, use cases never speak HTTP.

Read from the source's import statements, so a new import that breaks a
rule fails here before anyone relies on it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTTP = sorted((ROOT / "service" / "http").glob("*.py"))
# The service layer HTTP, the CLI, benchmarks and tests call alike.
SERVICE_LAYER = [
    ROOT / "service" / name
    for name in (
        "bootstrap.py",
        "key_commands.py",
        "key_lifecycle.py",
        "queries.py",
        "service_keys.py",
        "vitals_reading.py",
    )
]


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports, at any depth of its code."""
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def reaches(modules: set[str], package: str) -> list[str]:
    return sorted(m for m in modules if m == package or m.startswith(f"{package}."))


def test_the_rules_read_real_imports() -> None:
    # The walk sees imports inside functions too (a rule cannot be dodged by deferring one).
    assert "service.bootstrap" in imported_modules(ROOT / "service" / "http" / "app.py")
    assert "asyncpg" in imported_modules(ROOT / "service" / "store" / "database.py")
    assert "service.http.context" in imported_modules(ROOT / "tests" / "support" / "api.py")
    assert len(HTTP) > 10


@pytest.mark.parametrize("path", HTTP, ids=lambda p: p.name)
def test_http_never_reaches_storage(path: Path) -> None:
    modules = imported_modules(path)
    assert reaches(modules, "asyncpg") == []
    assert reaches(modules, "service.store") == []


@pytest.mark.parametrize("path", SERVICE_LAYER, ids=lambda p: p.name)
def test_the_service_layer_knows_no_http(path: Path) -> None:
    modules = imported_modules(path)
    assert reaches(modules, "aiohttp") == []
    assert reaches(modules, "service.http") == []
