"""docs/client.md cannot drift: each of its examples runs, as a reader would, against a
real keyledger with PostgreSQL and NATS, and prints what the page says it prints."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import AsyncIterator

import pytest

from keyledger_client import KeyledgerClient
from service.settings import Settings
from tests.support.client_env import ROOT, client_environment

DOC = ROOT / "docs" / "client.md"
_BLOCK = re.compile(r"<!-- doc-test: ([a-z0-9-]+) -->\n```python\n(.*?)```", re.S)
# What each example must print (every line, in order; None: anything).
EXPECTED: dict[str, list[str | re.Pattern[str]]] = {
    "quick-start": [re.compile(r"key_\w{26} sk_live_\S+…\w{4}"), "True VALID", "REVOKED"],
    # Three keys over two pages of two, newest first.
    "async": [re.compile(rf"key_\w{{26}} worker {n} .+") for n in (2, 1, 0)]
    + [re.compile(r"404 key_not_found \S+")],
    "signing": ["VALID"],
    "local-verifier": ["VALID", "VALID", "REVOKED"],
    "events": ["9 key_01JD0000000000000000000000 leaked"],
}


@pytest.fixture(scope="module")
async def environment(
    postgres_server_url: str, settings: Settings, nats_url: str
) -> AsyncIterator[dict[str, str]]:
    async with client_environment(postgres_server_url, settings, nats_url) as (_, env):
        yield env


def test_every_example_is_checked() -> None:
    assert [name for name, _ in _BLOCK.findall(DOC.read_text())] == list(EXPECTED)


@pytest.mark.parametrize("name", list(EXPECTED))
async def test_the_example_runs_and_prints_what_the_page_says(
    name: str, environment: dict[str, str]
) -> None:
    code = dict(_BLOCK.findall(DOC.read_text()))[name]
    # A child process: the server runs on this event loop and must keep answering it.
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        code,
        env=environment,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()[-3000:]
    # A reader runs an example again and again: it leaves no key that would add up to the
    # limit of active keys per org, or show in the next run's list.
    async with KeyledgerClient(
        environment["KEYLEDGER_API_URL"], environment["KEYLEDGER_SERVICE_KEY"]
    ) as kl:
        for org in ("acme", "acme-docs"):
            assert [key.name async for key in kl.list_keys(org, status="active")] == []
    lines = out.decode().splitlines()
    assert len(lines) == len(EXPECTED[name]), lines
    for line, expected in zip(lines, EXPECTED[name], strict=True):
        if isinstance(expected, str):
            assert line == expected
        else:
            assert expected.fullmatch(line), line
