"""``keyledger serve --workers N``: processes sharing one port, stopped together."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bench.support import scratch_database
from tests.support.serve_process import KEYLEDGER, create_admin_key, serve_env, wait_healthy


def _children(pid: int) -> set[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return {int(child) for child in text.split()}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too: it only waits for its parent to read its status.
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return False


def _post(url: str, body: dict[str, object], secret: str) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # a new connection each time
        return response.status, json.loads(response.read())


@contextlib.contextmanager
def _workers(database_url: str, count: int) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    env = serve_env(database_url)
    admin_key = create_admin_key(env)
    process = subprocess.Popen(
        [KEYLEDGER, "serve", "--workers", str(count)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        url = f"http://127.0.0.1:{env['KEYLEDGER_PORT']}"
        assert line == f"keyledger serving on {url} ({count} workers)"
        wait_healthy(url, process)  # type: ignore[arg-type]
        yield process, url, admin_key
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


@pytest.fixture
async def own_database(postgres_server_url: str) -> AsyncIterator[str]:
    """A database of the test's own: the served workers have a pepper of their own."""
    async with scratch_database(postgres_server_url, prefix="keyledger_workers") as url:
        yield url


def test_two_workers_share_the_port_and_stop_together_on_sigterm(own_database: str) -> None:
    with _workers(own_database, 2) as (process, url, admin_key):
        workers = _children(process.pid)
        assert len(workers) == 2
        # Keys made through one worker verify through the other (each has its own index:
        # min_position makes a verify wait until its worker's index has the key).
        for number in range(6):
            status, created = _post(
                f"{url}/v1/orgs/workers/keys", {"name": f"k{number}", "type": "secret"}, admin_key
            )
            assert status == 201
            for _ in range(4):
                status, verdict = _post(
                    f"{url}/v1/verify",
                    {"key": created["secret"], "min_position": created["position"]},
                    admin_key,
                )
                assert (status, verdict["code"]) == (200, "VALID")
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
        assert not any(_alive(pid) for pid in workers)


def test_a_worker_that_dies_stops_the_others(own_database: str) -> None:
    with _workers(own_database, 2) as (process, _, _):
        first, second = sorted(_children(process.pid))
        os.kill(first, signal.SIGKILL)
        assert process.wait(60) == 1
        assert not _alive(second)


@pytest.mark.parametrize("given", ["0", "x", "65"])
def test_a_bad_worker_count_is_a_usage_error(given: str) -> None:
    done = subprocess.run(
        [KEYLEDGER, "serve", "--workers", given], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2 and "--workers" in done.stderr
