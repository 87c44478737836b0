"""A client generated from ``/openapi.json`` by openapi-python-client works, and reads well.

The document is generated into a package with no warning at all (a warning means a part
of the API the generated client silently leaves out), the package imports, its
functions are named for what they do (``generate_key``, not ``post_v1_orgs_org_id_keys``),
and a key's lifecycle runs through it against the running app: generate, read, rename,
rotate, verify, revoke, verify again.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.support.api import new_org

pytestmark = pytest.mark.slow

PACKAGE = "keyledger_openapi_client"
# The generator's own run, ruff formatting its output included, takes a few seconds.
GENERATE_TIMEOUT_SECONDS = 120


async def _generate(document: dict[str, Any], where: Path) -> str:
    """Run openapi-python-client on ``document``; its whole output (stdout and stderr)."""
    spec, config = where / "openapi.json", where / "generator.json"
    spec.write_text(json.dumps(document))
    # A package name of its own: the generator's default (from the title) is this repo's
    # keyledger_client.
    config.write_text(
        json.dumps(
            {"project_name_override": "keyledger-openapi-client", "package_name_override": PACKAGE}
        )
    )
    # The generator formats its output with the ruff beside it; without it on PATH it warns.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openapi_python_client",
        "generate",
        "--path",
        str(spec),
        "--config",
        str(config),
        "--output-path",
        str(where / "client"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    output, _ = await asyncio.wait_for(process.communicate(), GENERATE_TIMEOUT_SECONDS)
    text = output.decode()
    assert process.returncode == 0, text
    return text


@pytest.fixture
def generated_modules() -> Iterator[None]:
    """Forget the generated package's modules afterwards (their files are in a tmp dir)."""
    yield
    for name in [n for n in sys.modules if n == PACKAGE or n.startswith(f"{PACKAGE}.")]:
        del sys.modules[name]


async def test_a_generated_python_client_runs_a_key_lifecycle(
    client: TestClient,
    admin_key: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    generated_modules: None,
) -> None:
    answer = await client.get("/openapi.json")
    assert answer.status == 200
    output = await _generate(await answer.json(), tmp_path)
    problems = [line for line in output.splitlines() if re.search(r"warning|error", line, re.I)]
    assert problems == [], f"the generator warned about the document:\n{output}"

    monkeypatch.syspath_prepend(str(tmp_path / "client"))

    def api(tag: str, name: str) -> ModuleType:
        return importlib.import_module(f"{PACKAGE}.api.{tag}.{name}")

    def model(name: str) -> Any:
        return getattr(importlib.import_module(f"{PACKAGE}.models"), name)

    # Named for what they do, grouped by the document's tags.
    generate_key, get_key, list_keys = (
        api("commands", "generate_key"),
        api("queries", "get_key"),
        api("queries", "list_keys"),
    )
    rename_key, rotate_key, revoke_key = (
        api("commands", "rename_key"),
        api("commands", "rotate_key"),
        api("commands", "revoke_key"),
    )
    verify_key = api("verification", "verify_key")

    org = new_org()
    authenticated = importlib.import_module(PACKAGE).AuthenticatedClient
    async with authenticated(base_url=str(client.make_url("")), token=admin_key) as keyledger:

        async def verify(secret: str) -> str:
            verdict = await verify_key.asyncio_detailed(
                client=keyledger, body=model("VerifyBody")(key=secret)
            )
            assert verdict.status_code == 200, verdict.content
            return str(verdict.parsed.code)

        body = model("GenerateKeyBody")(name="generated", type_=model("GenerateKeyBodyType").SECRET)
        generated = await generate_key.asyncio_detailed(org, client=keyledger, body=body)
        assert generated.status_code == 201, generated.content
        key_id, first_secret = generated.parsed.key.id, generated.parsed.secret
        assert await verify(first_secret) == "VALID"

        # Reads answer from projections: min_position waits for the key to reach them.
        written = generated.parsed.position
        read = await get_key.asyncio_detailed(org, key_id, client=keyledger, min_position=written)
        assert read.status_code == 200 and read.parsed.name == "generated", read.content
        listed = await list_keys.asyncio_detailed(org, client=keyledger, min_position=written)
        assert [key.id for key in listed.parsed.data] == [key_id], listed.content

        renamed = await rename_key.asyncio_detailed(
            org, key_id, client=keyledger, body=model("RenameKeyBody")(name="renamed")
        )
        assert renamed.status_code == 200 and renamed.parsed.key.name == "renamed"

        rotated = await rotate_key.asyncio_detailed(
            org, key_id, client=keyledger, body=model("RotateKeyBody")(grace_period="0s")
        )
        assert rotated.status_code == 200, rotated.content
        secret = rotated.parsed.secret
        assert secret != first_secret
        assert await verify(secret) == "VALID"
        assert await verify(first_secret) == "REVOKED"  # no grace: the old secret is done

        revoked = await revoke_key.asyncio_detailed(
            org,
            key_id,
            client=keyledger,
            body=model("RevokeKeyBody")(reason=model("RevokeKeyBodyReason").COMPROMISED),
        )
        assert revoked.status_code == 200 and str(revoked.parsed.key.status) == "revoked"
        assert await verify(secret) == "REVOKED"
