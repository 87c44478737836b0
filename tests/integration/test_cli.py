"""The ``keyledger`` command line as a user runs it: real processes, real servers."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from service.domain import key_material
from service.embedded import free_port
from service.settings import Settings
from tests.support.api import Api, indexed, new_org
from tests.support.dev_process import start_dev, stop_dev

KEYLEDGER = [sys.executable, "-m", "service.cli.main"]


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KEYLEDGER, *args], env={**os.environ, **env}, capture_output=True, text=True, timeout=60
    )


def test_migrate_and_create_service_key(settings: Settings) -> None:
    env = {
        "KEYLEDGER_DATABASE_URL": settings.database_url,
        "KEYLEDGER_PEPPER": settings.pepper.get_secret_value(),
    }
    assert run_cli(["migrate"], env).returncode == 0
    result = run_cli(
        [
            "admin",
            "create-service-key",
            "--name",
            "ci",
            "--scopes",
            "keys:read,keys:write",
            "--orgs",
            "acme,beta",
        ],
        env,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and key_material.is_well_formed(lines[0])
    assert lines[0] not in result.stderr

    bad = run_cli(["admin", "create-service-key", "--name", "x", "--scopes", "root"], env)
    assert bad.returncode != 0 and "scopes" in bad.stderr


def test_serve_refuses_to_start_without_a_pepper(settings: Settings) -> None:
    result = run_cli(
        ["serve"], {"KEYLEDGER_DATABASE_URL": settings.database_url, "KEYLEDGER_PEPPER": ""}
    )
    assert result.returncode != 0 and "KEYLEDGER_PEPPER" in result.stderr


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("nats://127.0.0.1:4222,,nats://127.0.0.1:4223", "entry 2 of 3 is empty"),
        ("nats://alice:hunter2@127.0.0.1:nope", "entry 1 of 1 (nats://***@127.0.0.1:nope)"),
    ],
)
def test_serve_refuses_a_bad_nats_server_list_naming_the_entry(
    settings: Settings, value: str, reason: str
) -> None:
    result = run_cli(
        ["serve"],
        {
            "KEYLEDGER_DATABASE_URL": settings.database_url,
            "KEYLEDGER_PEPPER": "p" * 32,
            "KEYLEDGER_NATS_URL": value,
        },
    )
    assert result.returncode == 2
    assert result.stderr.startswith("keyledger: invalid settings: KEYLEDGER_NATS_URL: ")
    assert reason in result.stderr and "hunter2" not in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.skipif(shutil.which("curl") is None, reason="the banner's example uses curl")
def test_dev_runs_the_pasted_curl_and_keeps_data(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "kl", free_port()
    process, secret, curl = start_dev(data_dir, port)
    try:
        assert key_material.is_well_formed(secret)
        shell = f"export KEYLEDGER_ADMIN_KEY={secret}\n{curl}"
        pasted = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=30)
        created = json.loads(pasted.stdout)
        assert created["key"]["name"] == "My first key"
        assert key_material.is_well_formed(created["secret"])
    finally:
        assert stop_dev(process) == 0

    process, second_secret, _ = start_dev(data_dir, port)
    try:
        # The dev admin key is kept in the folder and reused.
        assert second_secret == secret
        fetched = subprocess.run(
            [
                "curl",
                "-s",
                f"http://127.0.0.1:{port}/v1/orgs/acme/keys/{created['key']['id']}",
                "-H",
                f"Authorization: Bearer {secret}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert json.loads(fetched.stdout)["id"] == created["key"]["id"]
    finally:
        assert stop_dev(process) == 0


async def test_admin_revoke_revokes_in_one_go_and_refuses_in_one_line(
    settings: Settings, api: Api, client: TestClient
) -> None:
    env = {"KEYLEDGER_DATABASE_URL": settings.database_url, "KEYLEDGER_NATS_URL": ""}
    org = new_org()
    made = [await api.generate(org, environment=e) for e in ("live", "live", "test")]
    ids = [m["key"]["id"] for m in made]

    result = await asyncio.to_thread(
        run_cli, ["admin", "revoke", "--org", org, "--all", "--environment", "live",
                  "--reason", "leaked"], env
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert sorted(answer["revoked"]) == sorted(ids[:2])
    await indexed(client, answer["position"])
    codes = [(await api.post("/v1/verify", {"key": m["secret"]}))[2]["code"] for m in made]
    assert codes == ["REVOKED", "REVOKED", "VALID"]

    again = await asyncio.to_thread(
        run_cli, ["admin", "revoke", "--org", org, "--key-id", ids[0], "--key-id", ids[2],
                  "--reason", "other"], env
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["already_terminal"] == [ids[0]]

    unknown = "key_01JBZ8Q6S1T8YQ4Y4W1S3M5N7P"
    for args, says in [
        (["--key-id", unknown], unknown),
        (["--key-id", "sk_live_oops"], "value 1 is not a key id"),
        (["--all", "--created-by", "x"], "not allowed with"),
        ([], "one of the arguments"),
    ]:
        refused = await asyncio.to_thread(
            run_cli, ["admin", "revoke", "--org", org, *args, "--reason", "leaked"], env
        )
        assert refused.returncode == 2, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and says in refused.stderr
        assert "sk_live_oops" not in refused.stderr
