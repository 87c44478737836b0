"""The rules of the house, read from the imports (``ast``, nothing is imported).

Layers, inner to outer; a module imports only from its own layer or inner ones:

0. ``keyledger_client`` (the client, and the event contract in ``keyledger_client.events``)
   and ``events`` (that contract under its older name), importable on their own.
1. the core: ``service.domain`` (the pure decider) and the small pure modules
   beside it (errors, clock, settings, redaction, log configuration, key view).
2. storage: ``service.store`` (PostgreSQL) and ``service.key_usage``.
3. read models (``projections``) and verification (``service.verification``);
   neither knows the other.
4. the service layer: every other ``service`` module (commands, service keys,
   expiry, the outbox relay, …). A new top-level module lands here unless it
   is listed below.
5. the entrypoints: ``service.http``, ``service.cli`` and ``service.bootstrap``.

And besides the order: the domain imports no I/O library; HTTP handlers never
reach the store or asyncpg; only the entrypoints and the bootstrap know
aiohttp; nothing but the tests imports ``tests``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("keyledger_client", "events", "service", "projections")

LAYERS: dict[str, int] = {
    "keyledger_client": 0,
    "events": 0,
    "service.domain": 1,
    "service.errors": 1,
    "service.clock": 1,
    "service.settings": 1,
    "service.redaction": 1,
    "service.log_config": 1,
    "service.key_view": 1,
    "service.store": 2,
    "service.key_usage": 2,
    "service.usage_analytics": 2,
    "projections": 3,
    "service.verification": 3,
    "service.http": 5,
    "service.cli": 5,
    "service.bootstrap": 5,
}
SERVICE_LAYER = 4
LAYER_NAMES = ("events", "core", "storage", "read models / verification", "service", "entrypoint")
# Same layer, and still strangers: the read models and verification.
STRANGERS = (("projections", "service.verification"), ("service.verification", "projections"))

# What the domain may import of this repository.
DOMAIN_MAY_IMPORT = ("events", "service.domain", "service.errors")
IO_LIBRARIES = (
    "aiohttp",
    "asyncio",
    "asyncpg",
    "http",
    "httpx",
    "io",
    "logging",
    "nats",
    "os",
    "pathlib",
    "psycopg",
    "requests",
    "shutil",
    "socket",
    "sqlite3",
    "ssl",
    "structlog",
    "subprocess",
    "tempfile",
    "urllib",
)
ENTRYPOINTS = ("service.http", "service.cli", "service.bootstrap")
# The client's middleware for aiohttp services is the one client module made of aiohttp.
# And aiohttp as an HTTP client, not the server: the one module that posts webhook deliveries.
AIOHTTP_MAY_BE_KNOWN_TO = (*ENTRYPOINTS, "keyledger_client.aiohttp", "service.webhooks.sender")

# Known to break a rule until the composition root lands (another branch of issue 10).
HANDLERS_STILL_REACHING_STORAGE: dict[str, str] = {}


@dataclass(frozen=True, slots=True)
class Import:
    """One import statement's target, as written in ``path`` at ``line``."""

    path: Path
    line: int
    target: str

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line} imports {self.target}"


def under(name: str, prefix: str) -> bool:
    """``name`` is ``prefix`` or inside it (``a.b`` is under ``a``, ``ab`` is not)."""
    return name == prefix or name.startswith(prefix + ".")


def module_of(path: Path) -> str:
    """The dotted module name of a file below ROOT."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_in(source: str, path: Path) -> Iterator[Import]:
    """Every import in ``source``, at any depth (functions, ``if TYPE_CHECKING``, ``try``).

    ``from a import b`` yields both ``a`` and ``a.b``: ``b`` may be a module.
    """
    package = module_of(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(path, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            yield Import(path, node.lineno, module)
            for alias in node.names:
                if alias.name != "*":
                    yield Import(path, node.lineno, f"{module}.{alias.name}")


def files_under(*tops: str) -> list[Path]:
    return sorted(p for top in tops for p in (ROOT / top).rglob("*.py"))


def imports_of(paths: Iterable[Path]) -> list[Import]:
    return [found for path in paths for found in imports_in(path.read_text(), path)]


def layer_of(module: str) -> int | None:
    """The layer of a module of this repository; None for anything else."""
    matches = [prefix for prefix in LAYERS if under(module, prefix)]
    if matches:
        return LAYERS[max(matches, key=len)]
    return SERVICE_LAYER if under(module, "service") else None


def against_the_order(imports: Iterable[Import]) -> list[str]:
    """The imports that point outward, or between the two strangers."""
    wrong = []
    for found in imports:
        source, target = module_of(found.path), found.target
        own, theirs = layer_of(source), layer_of(target)
        if own is None or theirs is None:
            continue
        if theirs > own:
            wrong.append(f"{found} ({LAYER_NAMES[own]} → {LAYER_NAMES[theirs]})")
        elif any(under(source, a) and under(target, b) for a, b in STRANGERS):
            wrong.append(f"{found} (read models and verification are strangers)")
    return wrong


# -- the rules -------------------------------------------------------------


def test_layers_point_one_way() -> None:
    assert against_the_order(imports_of(files_under(*PRODUCT))) == []


@pytest.mark.parametrize(
    "path", files_under("service/domain"), ids=lambda p: p.name, scope="module"
)
def test_the_domain_imports_no_io_library_and_no_outer_layer(path: Path) -> None:
    wrong = [
        str(found)
        for found in imports_of([path])
        if any(under(found.target, io) for io in IO_LIBRARIES)
        or (
            layer_of(found.target) is not None
            and not any(under(found.target, ok) for ok in DOMAIN_MAY_IMPORT)
        )
    ]
    assert wrong == []


def test_events_import_nothing_of_the_service() -> None:
    wrong = [
        str(found)
        for found in imports_of(files_under("events", "keyledger_client"))
        if any(under(found.target, other) for other in ("service", "projections", "bench", "tests"))
    ]
    assert wrong == []


def _handlers() -> list[object]:
    handlers = [*files_under("service/http")]
    chosen = [p for p in handlers if p.name.endswith("_routes.py") or p.name == "vitals.py"]
    return [
        pytest.param(
            path,
            id=path.name,
            marks=pytest.mark.xfail(
                strict=False,
                reason=f"for the lead: {HANDLERS_STILL_REACHING_STORAGE[path.name]}; "
                "the composition-root branch moves this behind the service layer, "
                "then drop this entry",
            ),
        )
        if path.name in HANDLERS_STILL_REACHING_STORAGE
        else pytest.param(path, id=path.name)
        for path in chosen
    ]


@pytest.mark.parametrize("path", _handlers())
def test_http_handlers_never_import_the_store_or_asyncpg(path: Path) -> None:
    wrong = [
        str(found)
        for found in imports_of([path])
        if under(found.target, "service.store") or under(found.target, "asyncpg")
    ]
    assert wrong == []


def test_only_the_entrypoints_and_the_bootstrap_know_aiohttp() -> None:
    wrong = [
        str(found)
        for found in imports_of(files_under(*PRODUCT))
        if under(found.target, "aiohttp")
        and not any(under(module_of(found.path), entry) for entry in AIOHTTP_MAY_BE_KNOWN_TO)
    ]
    assert wrong == []


def test_benchmarks_examples_and_product_never_import_tests() -> None:
    wrong = [
        str(found)
        for found in imports_of(files_under(*PRODUCT, "bench", "examples"))
        if under(found.target, "tests")
    ]
    assert wrong == []


# -- the reader itself -----------------------------------------------------


def test_the_reader_sees_every_form_of_import() -> None:
    path = ROOT / "service" / "store" / "example.py"
    source = "\n".join(
        [
            "import asyncpg.pool as p",
            "from aiohttp import web",
            "from . import quarantine",
            "from ..domain.state import KeyState",
            "from typing import TYPE_CHECKING",
            "if TYPE_CHECKING:",
            "    import projections.runner",
            "def later():",
            "    from tests.support import api",
            "try:",
            "    import nats",
            "except ImportError:",
            "    pass",
        ]
    )
    targets = {found.target for found in imports_in(source, path)}
    assert {
        "asyncpg.pool",
        "aiohttp.web",
        "service.store.quarantine",
        "service.domain.state.KeyState",
        "projections.runner",
        "tests.support.api",
        "nats",
    } <= targets


@pytest.mark.parametrize(
    ("source", "target", "broken"),
    [
        ("service/store/event_store.py", "projections.runner", True),
        ("service/domain/decider.py", "service.store.event_store", True),
        ("events/codec.py", "service.domain.state", True),
        ("projections/key_views.py", "service.verification.index", True),
        ("service/verification/index.py", "projections.runner", True),
        ("service/verification/index.py", "service.http.app", True),
        ("service/key_commands.py", "service.bootstrap", True),
        ("service/new_use_case.py", "service.cli.main", True),
        ("service/http/app.py", "service.store.event_store", False),
        ("service/key_commands.py", "service.verification.callers", False),
        ("projections/runner.py", "service.store.quarantine", False),
        ("service/verification/feed.py", "service.store.log_follower", False),
        ("service/domain/decider.py", "asyncpg", False),  # not ours: the domain rule's part
    ],
)
def test_the_order_is_enforced(source: str, target: str, broken: bool) -> None:
    found = Import(ROOT / source, 1, target)
    assert bool(against_the_order([found])) is broken
