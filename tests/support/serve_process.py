"""One real ``keyledger serve`` process on a free port, with an admin key from the CLI."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from service.embedded import free_port

KEYLEDGER = str(Path(sys.executable).parent / "keyledger")


@dataclass(frozen=True, slots=True)
class Served:
    """A running server: its base URL, process, environment and an admin service key."""

    url: str
    process: subprocess.Popen[bytes]
    env: dict[str, str]
    admin_key: str


def serve_env(database_url: str, nats_url: str | None = None, **settings: str) -> dict[str, str]:
    """The environment of a ``keyledger serve`` with its own port, stream and subjects."""
    token = uuid.uuid4().hex[:10]
    return {
        **os.environ,
        "KEYLEDGER_DATABASE_URL": database_url,
        "KEYLEDGER_NATS_URL": nats_url or "",
        "KEYLEDGER_PEPPER": "served-" + secrets.token_hex(16),
        "KEYLEDGER_HOST": "127.0.0.1",
        "KEYLEDGER_PORT": str(free_port()),
        "KEYLEDGER_NATS_STREAM": f"SERVED_{token.upper()}",
        "KEYLEDGER_NATS_SUBJECT_PREFIX": f"served.{token}",
        "KEYLEDGER_LOG_LEVEL": "warning",
        **{f"KEYLEDGER_{name.upper()}": value for name, value in settings.items()},
    }


def create_admin_key(env: dict[str, str]) -> str:
    """``keyledger admin create-service-key``: the secret is alone on the last line."""
    done = subprocess.run(
        [KEYLEDGER, "admin", "create-service-key", "--name", "test admin", "--scopes", "admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip().splitlines()[-1]


def wait_healthy(url: str, process: subprocess.Popen[bytes], within: float = 30.0) -> None:
    """Poll ``/healthz`` until it answers 200 (or the process dies, or time runs out)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"keyledger serve exited with {process.returncode}")
        with (
            contextlib.suppress(OSError, urllib.error.URLError),
            urllib.request.urlopen(f"{url}/healthz", timeout=1) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.1)
    raise TimeoutError(f"keyledger serve at {url} did not become healthy")


@contextlib.contextmanager
def served(database_url: str, nats_url: str | None = None, **settings: str) -> Iterator[Served]:
    """``keyledger serve`` for the block (the admin key is made first, as a user would)."""
    env = serve_env(database_url, nats_url, **settings)
    admin_key = create_admin_key(env)
    process = subprocess.Popen([KEYLEDGER, "serve"], env=env, stdout=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{env['KEYLEDGER_PORT']}"
    try:
        wait_healthy(url, process)
        yield Served(url=url, process=process, env=env, admin_key=admin_key)
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
