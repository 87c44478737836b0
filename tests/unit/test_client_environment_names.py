"""A newcomer pastes ``keyledger dev``'s export lines, then runs the client's examples and the
snippets of docs/client.md: every ``KEYLEDGER_*`` variable they read must be one of those lines
(docs/client.md is run with exactly those variables by tests/integration/test_docs_client.py)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from service.cli.dev import banner
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
READERS = [
    ROOT / "docs" / "client.md",
    ROOT / "examples" / "aiohttp_protected.py",
    ROOT / "examples" / "fastapi_protected.py",
]
_READ = re.compile(r"""os\.environ(?:\.get\(|\[)["'](KEYLEDGER_\w+)["']""")


def test_the_dev_banner_exports_every_variable_the_client_examples_read(tmp_path: Path) -> None:
    settings = Settings(database_url="postgresql://dev", nats_url="nats://127.0.0.1:4222")
    shown = banner(settings, "sk_live_admin", "new", tmp_path)
    exported = set(re.findall(r"^\s*export (KEYLEDGER_\w+)=", shown, re.M))
    read = {name for path in READERS for name in _READ.findall(path.read_text())}
    assert {"KEYLEDGER_API_URL", "KEYLEDGER_SERVICE_KEY", "KEYLEDGER_NATS_URL"} <= read
    assert read <= exported, read - exported


def test_the_pasted_exports_give_the_client_the_admin_key(tmp_path: Path) -> None:
    settings = Settings(database_url="postgresql://dev", nats_url="nats://127.0.0.1:4222")
    shown = banner(settings, "sk_live_admin", "new", tmp_path)
    exports = "\n".join(line for line in shown.splitlines() if line.strip().startswith("export "))
    pasted = subprocess.run(
        ["bash", "-c", f'{exports}\nprintf %s "$KEYLEDGER_SERVICE_KEY $KEYLEDGER_API_URL"'],
        capture_output=True,
        text=True,
        check=True,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert pasted.stdout == "sk_live_admin http://127.0.0.1:8080"
