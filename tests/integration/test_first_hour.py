"""The first hour with keyledger (issue 11): one-line errors, and a dev that cannot collide.

Every CLI error path prints exactly one line on stderr and exits 2 when the
user can fix it (a setting, a flag, a port, a busy data folder); ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import json
import socket
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from service.cli import dev_folder
from service.embedded import free_port
from service.settings import Settings
from tests.support.dev_process import KEYLEDGER, clean_environment, start_dev, stop_dev

PEPPER = "p" * 32
LISTENER = Path(__file__).resolve().parents[2] / "examples" / "revocation_listener.py"


def run(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEYLEDGER, *args],
        env=clean_environment(KEYLEDGER_DATA_DIR=str(cwd / ".keyledger"), **env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=90,
    )


def one_line_error(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    lines = result.stderr.splitlines()
    assert result.returncode == code and len(lines) == 1, result.stderr
    assert lines[0].startswith("keyledger: ") and "Traceback" not in result.stderr
    return lines[0]


@pytest.fixture
def listening() -> Iterator[int]:
    """A port something already listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


COMMANDS = {
    "migrate": (["migrate"], "KEYLEDGER_DATABASE_URL"),
    "create-service-key": (
        ["admin", "create-service-key", "--name", "x", "--scopes", "admin"],
        "KEYLEDGER_DATABASE_URL, KEYLEDGER_PEPPER",
    ),
    "audit verify": (["audit", "verify"], "KEYLEDGER_DATABASE_URL"),
    "audit repair": (["audit", "repair"], "KEYLEDGER_DATABASE_URL, KEYLEDGER_NATS_URL"),
    "projections rebuild": (["projections", "rebuild"], "KEYLEDGER_DATABASE_URL"),
    "events tail": (["events", "tail"], "KEYLEDGER_NATS_URL"),
    "serve": (["serve"], "KEYLEDGER_DATABASE_URL, KEYLEDGER_PEPPER"),
}


@pytest.mark.parametrize("command", COMMANDS)
def test_missing_settings_are_all_named_in_one_line(tmp_path: Path, command: str) -> None:
    args, named = COMMANDS[command]
    line = one_line_error(run(args, tmp_path))
    assert line.startswith(f"keyledger: missing settings: {named} (export them")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_the_settings_a_command_needs(tmp_path: Path, command: str) -> None:
    args, named = COMMANDS[command]
    shown = run([*args, "--help"], tmp_path)
    assert shown.returncode == 0
    assert all(variable in shown.stdout for variable in named.split(", "))


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["serve"], {"KEYLEDGER_PORT": "abc"}, "KEYLEDGER_PORT: Input should be a valid integer"),
        (["serve", "--port", "99999"], {}, "argument --port: a port is 0-65535, not 99999"),
        (["dev", "--port", "-1"], {}, "argument --port: a port is 0-65535, not -1"),
        (["dev", "--port", "0"], {}, "--port 0 is not for keyledger dev"),
        (["dev"], {"KEYLEDGER_PORT": "0"}, "KEYLEDGER_PORT 0 is not for keyledger dev"),
        (["serve", "--port", "abc"], {}, "argument --port: invalid int value: 'abc'"),
        (["events", "tail", "--max", "0"], {}, "--max must be at least 1"),
        (["events", "tail", "--org", "Not An Org"], {}, "--org must be an org id"),
        (["admin", "create-service-key", "--name", "x", "--scopes", ","], {}, "--scopes needs"),
        (["frobnicate"], {}, "invalid choice: 'frobnicate'"),
        (["serve"], {"KEYLEDGER_PEPPER": "short"}, "KEYLEDGER_PEPPER is too short"),
        (["dev", "--data-dir", "/proc/kl-nope"], {}, "cannot use /proc/kl-nope as the dev data"),
    ],
)
def test_bad_settings_and_flags_are_one_line_exit_2(
    tmp_path: Path, args: list[str], env: dict[str, str], expected: str
) -> None:
    env = {"KEYLEDGER_DATABASE_URL": "postgresql://127.0.0.1:1/x", **env}
    assert expected in one_line_error(run(args, tmp_path, **env))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://postgres@127.0.0.1:{port}/x", "ConnectionRefusedError"),
        ("postgresql://nobody:hunter2@{host}/postgres", "nobody"),
        ("notaurl", "invalid DSN"),
    ],
)
@pytest.mark.parametrize(
    "args", [["migrate"], ["audit", "verify"], ["projections", "rebuild"], ["serve", "--port", "0"]]
)
def test_an_unreachable_database_is_one_line(
    tmp_path: Path, settings: Settings, url: str, expected: str, args: list[str]
) -> None:
    assert settings.database_url is not None
    host = settings.database_url.split("@")[-1].split("/")[0]
    database_url = url.format(port=free_port(), host=host)
    line = one_line_error(
        run(args, tmp_path, KEYLEDGER_DATABASE_URL=database_url, KEYLEDGER_PEPPER=PEPPER)
    )
    assert "cannot connect to the database" in line and expected in line
    assert "KEYLEDGER_DATABASE_URL" in line and "hunter2" not in line


@pytest.mark.parametrize("args", [["events", "tail"], ["audit", "repair"]])
def test_unreachable_nats_is_one_line(tmp_path: Path, settings: Settings, args: list[str]) -> None:
    nowhere = f"nats://alice:hunter2@127.0.0.1:{free_port()}"
    result = run(
        args,
        tmp_path,
        KEYLEDGER_DATABASE_URL=settings.database_url or "",
        KEYLEDGER_NATS_URL=nowhere,
    )
    line = one_line_error(result)
    assert "KEYLEDGER_NATS_URL" in line and "hunter2" not in line


def test_a_stream_that_is_not_there_is_one_line(tmp_path: Path, nats_url: str) -> None:
    stream = f"NOT_THERE_{uuid.uuid4().hex[:8].upper()}"
    result = run(
        ["events", "tail"], tmp_path, KEYLEDGER_NATS_URL=nats_url, KEYLEDGER_NATS_STREAM=stream
    )
    assert f"no stream '{stream}' at " in one_line_error(result)


@pytest.mark.parametrize("command", [["serve"], ["dev"]])
def test_a_port_in_use_is_one_line_and_dev_mints_nothing(
    tmp_path: Path, settings: Settings, listening: int, command: list[str]
) -> None:
    args = [*command, "--port", str(listening)]
    line = one_line_error(
        run(
            args,
            tmp_path,
            KEYLEDGER_DATABASE_URL=settings.database_url or "",
            KEYLEDGER_PEPPER=PEPPER,
        )
    )
    assert f"cannot listen on 127.0.0.1:{listening}" in line and "KEYLEDGER_PORT" in line
    # Nothing made for nothing: not even the folder with its lock.
    assert not (tmp_path / ".keyledger").exists()


@pytest.mark.parametrize("nats", ["nats://alice:hunter2@127.0.0.1:{port}", "garbage"])
def test_dev_with_an_unreachable_nats_is_one_line_and_leaves_no_folder(
    tmp_path: Path, nats: str
) -> None:
    folder = tmp_path / "d1"
    result = run(
        ["dev", "--data-dir", str(folder), "--port", str(free_port())],
        tmp_path,
        KEYLEDGER_NATS_URL=nats.format(port=free_port()),
    )
    line = one_line_error(result)
    assert "cannot reach NATS at" in line and "KEYLEDGER_NATS_URL" in line
    assert "hunter2" not in line and not folder.exists()


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--scopes", "bogus"], "service key scopes must be among"),
        (["--scopes", "admin", "--orgs", "BAD!"], "orgs must be a list of org ids"),
        (["--name", "", "--scopes", "admin"], "name must be 1-100 characters"),
    ],
)
def test_create_service_key_mistakes_are_exit_2(
    tmp_path: Path, settings: Settings, args: list[str], expected: str
) -> None:
    assert settings.pepper is not None
    result = run(
        ["admin", "create-service-key", "--name", "x3", *args],
        tmp_path,
        KEYLEDGER_DATABASE_URL=settings.database_url or "",
        KEYLEDGER_PEPPER=settings.pepper.get_secret_value(),
    )
    assert expected in one_line_error(result)


def test_a_pepper_the_database_was_not_made_with_is_exit_2(
    tmp_path: Path, settings: Settings, admin_key: str
) -> None:
    result = run(
        ["admin", "create-service-key", "--name", "x", "--scopes", "admin"],
        tmp_path,
        KEYLEDGER_DATABASE_URL=settings.database_url or "",
        KEYLEDGER_PEPPER="q" * 40,
    )
    assert "KEYLEDGER_PEPPER does not match" in one_line_error(result)


def test_serve_reports_its_start_problems_together(tmp_path: Path, listening: int) -> None:
    result = run(
        ["serve", "--port", str(listening)],
        tmp_path,
        KEYLEDGER_DATABASE_URL="postgresql://127.0.0.1:1/x",
        KEYLEDGER_PEPPER="short",
    )
    line = one_line_error(result)
    assert (
        "KEYLEDGER_PEPPER is too short" in line
        and f"cannot listen on 127.0.0.1:{listening}" in line
    )


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run(["--debug", "serve"], tmp_path, KEYLEDGER_PORT="99999")
    assert result.returncode == 2 and "Traceback" in result.stderr
    assert result.stderr.splitlines()[-1].startswith("keyledger: invalid settings: KEYLEDGER_PORT")


def _admin_request(port: int, secret: str, path: str, body: dict[str, str] | None = None) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {secret}", "Content-Type": "application/json"},
        method="GET" if body is None else "POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _nats_servers_on(store: Path) -> set[int]:
    """Pids of the nats-server processes using ``store``."""
    pids = set()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(b"nats-server" in part for part in cmdline[:1]) and str(store).encode() in cmdline:
            pids.add(int(proc.name))
    return pids


def test_dev_cannot_collide_and_the_cli_just_works_next_to_it(tmp_path: Path) -> None:
    folder, port = tmp_path / ".keyledger", free_port()
    process, secret, _ = start_dev(folder, port)
    try:
        urls = json.loads((folder / dev_folder.URLS).read_text())
        assert urls["api_url"] == f"http://127.0.0.1:{port}"
        assert set(urls) == {
            "api_url",
            "database_url",
            "nats_url",
            "nats_stream",
            "nats_subject_prefix",
        }
        servers_before = _nats_servers_on(folder / "nats")
        assert len(servers_before) == 1

        # A second dev on this folder stops before touching anything, on any port.
        for other_port in (port, free_port()):
            line = one_line_error(run(["dev", "--port", str(other_port)], tmp_path))
            assert line == (
                f"keyledger: keyledger dev is already running here (pid {process.pid},"
                f" http://127.0.0.1:{port}); stop it, or use another --data-dir"
            )
        assert dev_folder.stored_admin_key(folder) == secret
        # No second nats-server on the same JetStream store (the first one's own files
        # keep changing as it creates its stream, so they are no evidence either way).
        assert _nats_servers_on(folder / "nats") == servers_before

        # Next to it, with no KEYLEDGER_* setting, every command just works.
        assert run(["migrate"], tmp_path).returncode == 0
        created = run(
            ["admin", "create-service-key", "--name", "ci", "--scopes", "keys:read"], tmp_path
        )
        assert created.returncode == 0 and created.stdout.startswith("sk_live_"), created.stderr
        verified = run(["audit", "verify"], tmp_path)
        assert verified.returncode == 0 and json.loads(verified.stdout)["ok"] is True
        assert run(["projections", "rebuild"], tmp_path).returncode == 0
        tail = run(["events", "tail", "--from-start", "--max", "1"], tmp_path)
        assert tail.returncode == 0 and json.loads(tail.stdout)["position"] == 1

        # The dev admin key is revoked: the next start says so and makes a new one.
        admin = next(
            key
            for key in _admin_request(port, secret, "/v1/orgs/_system/keys")["data"]
            if key["name"] == "dev admin"
        )
        # The example listener finds the dev's NATS and stream by itself, and sees it.
        listener = subprocess.Popen(
            [KEYLEDGER[0], str(LISTENER), "--durable", "first-hour"],
            env=clean_environment(PYTHONPATH=str(LISTENER.parents[1])),
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            text=True,
        )
        reader = ThreadPoolExecutor(1)
        try:
            assert listener.stdout is not None
            line = reader.submit(listener.stdout.readline)
            _admin_request(
                port, secret, f"/v1/orgs/_system/keys/{admin['id']}/revoke", {"reason": "other"}
            )
            assert line.result(timeout=60).startswith(f"evicted {admin['id']} ")
        finally:
            # Ended before the reader is waited for: its readline returns at EOF.
            listener.terminate()
            listener.wait(30)
            reader.shutdown()
    finally:
        assert stop_dev(process) == 0
    assert not (folder / dev_folder.URLS).exists()
    missing = one_line_error(run(["migrate"], tmp_path))
    assert "missing settings: KEYLEDGER_DATABASE_URL" in missing

    process, renewed, _ = start_dev(folder, port)
    try:
        assert renewed != secret and dev_folder.stored_admin_key(folder) == renewed
    finally:
        assert stop_dev(process) == 0
    # Working now, it is reused.
    process, again, _ = start_dev(folder, port)
    try:
        assert again == renewed
    finally:
        assert stop_dev(process) == 0


@pytest.mark.parametrize(
    ("args", "code", "expected"),
    [
        (["--nats", "nats://127.0.0.1:{port}"], 1, "cannot listen at nats://127.0.0.1:"),
        ([], 2, "no NATS to listen to"),
    ],
)
def test_the_revocation_listener_fails_in_one_line(
    tmp_path: Path, args: list[str], code: int, expected: str
) -> None:
    port = free_port()
    result = subprocess.run(
        [KEYLEDGER[0], str(LISTENER), *(arg.format(port=port) for arg in args)],
        env=clean_environment(PYTHONPATH=str(LISTENER.parents[1])),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    lines = result.stderr.splitlines()
    assert result.returncode == code and len(lines) == 1, result.stderr
    assert expected in lines[0]
