"""README.md, pasted in order: every shell block runs next to a live ``keyledger dev``.

The test starts ``keyledger dev`` as a process in a scratch folder (on a free
port; pointed at the test PostgreSQL and NATS, in a database and stream of its
own), pastes the banner's ``export`` lines as the README tells a user to, then
runs every other shell block in one bash process, checking each status a
``# → NNN`` comment claims (see tests/support/readme_shell.py for the rules and
for the markers that skip a block). A README that drifts fails here.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.support import scratch_database
from service.cli import dev_folder
from service.embedded import free_port
from tests.support import readme_shell
from tests.support.dev_process import clean_environment, launch_dev, stop_dev
from tests.support.outbox import deleted_at_exit, jetstream

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


@dataclass(frozen=True, slots=True)
class LiveDev:
    """A running ``keyledger dev`` and the second shell a user pastes the README into."""

    folder: Path
    shell_env: dict[str, str]
    banner: str
    urls: dict[str, str]

    @property
    def exports(self) -> str:
        """The banner's ``export`` lines, as a user pastes them."""
        lines = (line.strip() for line in self.banner.splitlines())
        return "\n".join(line for line in lines if line.startswith("export KEYLEDGER_"))


@pytest.fixture(scope="module")
async def live_dev(
    tmp_path_factory: pytest.TempPathFactory, postgres_server_url: str, nats_url: str
) -> AsyncIterator[LiveDev]:
    """``keyledger dev`` in a folder laid out like a clone (``examples/`` is there)."""
    folder = tmp_path_factory.mktemp("readme")
    (folder / "examples").symlink_to(ROOT / "examples")
    token = uuid.uuid4().hex[:10]
    stream = f"README_{token.upper()}"
    # This checkout's `keyledger`, `python` and `python3` first, and no KEYLEDGER_* setting.
    shell_env = clean_environment(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        PYTHONPATH=str(ROOT),
    )
    async with (
        scratch_database(postgres_server_url, "keyledger_readme") as database_url,
        jetstream(nats_url) as js,
        deleted_at_exit(js, stream),
    ):
        dev_env = {
            **shell_env,
            "KEYLEDGER_DATABASE_URL": database_url,
            "KEYLEDGER_NATS_URL": nats_url,
            "KEYLEDGER_NATS_STREAM": stream,
            "KEYLEDGER_NATS_SUBJECT_PREFIX": f"readme{token}",
            "KEYLEDGER_LOG_LEVEL": "warning",
        }
        args = ["--port", str(free_port())]
        process, banner = await asyncio.to_thread(launch_dev, args, cwd=folder, env=dev_env)
        try:
            urls = dev_folder.read_urls(folder / ".keyledger")
            yield LiveDev(folder=folder, shell_env=shell_env, banner=banner, urls=urls)
        finally:
            assert await asyncio.to_thread(stop_dev, process) == 0


@dataclass(frozen=True, slots=True)
class Pasted:
    """What one bash process printed, and the README lines whose claims it checked."""

    returncode: int
    stdout: Path
    stderr: str
    checked: set[int]


def paste(
    dev: LiveDev, markdown: str, work: Path, until: Callable[[str], bool] | None = None
) -> Pasted:
    """Run ``markdown``'s shell blocks in one bash, as one user's shell next to ``dev``.

    ``until``: once the script is done, wait (bounded) for its background jobs to
    print what it looks for; then every process the script started is ended.
    """
    script = work / "readme.sh"
    script.write_text(readme_shell.script(readme_shell.parse_blocks(markdown), dev.exports))
    stdout, stderr, checked = work / "stdout", work / "stderr", work / "checked"
    with stdout.open("w") as out, stderr.open("w") as err:
        process = subprocess.Popen(
            ["bash", str(script)],
            cwd=dev.folder,
            env={**dev.shell_env, "KL_CHECKED": str(checked)},
            stdout=out,
            stderr=err,
            start_new_session=True,  # its background jobs too are ended below
        )
        try:
            process.wait(timeout=120)
            deadline = time.monotonic() + 60
            while until is not None and not until(stdout.read_text()):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            process.wait()
    lines = checked.read_text().split() if checked.exists() else []
    return Pasted(process.returncode, stdout, stderr.read_text(), {int(n) for n in lines})


def test_every_shell_block_of_the_readme_does_what_it_claims(
    live_dev: LiveDev, tmp_path: Path
) -> None:
    markdown = README.read_text(encoding="utf-8")
    blocks = readme_shell.parse_blocks(markdown)
    evicted = re.compile(r"evicted key_\w+ \(org acme, reason compromised,")

    pasted = paste(live_dev, markdown, tmp_path, until=lambda out: bool(evicted.search(out)))

    output = pasted.stdout.read_text()
    assert pasted.returncode == 0, f"{pasted.stderr}\n--- stdout (end) ---\n{output[-3000:]}"
    claimed = {
        command.line
        for block in blocks
        if block.is_shell and block.marker is None
        for command in block.commands
        if command.claim is not None
    }
    # Every claim was checked: nothing ended the script early.
    assert claimed and pasted.checked == claimed
    # The revocation listener the README starts in the background saw the key revoked.
    assert evicted.search(output), output[-3000:]


def test_the_banner_sample_is_what_dev_prints(live_dev: LiveDev) -> None:
    (sample,) = [b for b in readme_shell.parse_blocks(README.read_text()) if b.marker == "banner"]
    replacements = {
        "http://127.0.0.1:8080": live_dev.urls["api_url"],
        "nats://127.0.0.1:4222": live_dev.urls["nats_url"],
    }
    assert readme_shell.sample_matches(sample.body, live_dev.banner, replacements) == []


DEV_BLOCK = "<!-- readme-test: dev: started by the test -->\n```bash\nkeyledger dev\n```\n"


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("curl -s $KEYLEDGER_API_URL/healthz   # → 404 Not Found", "claims 404 Not Found, got 200"),
        ('curl -s $KEYLEDGER_API_URL/healthz   # → 200 OK {"status": "gone"}', "the body lacks"),
        ("curl -s $KEYLEDGER_API_URL/healthz   # → 200 OK with X-Nothing", "no X-Nothing header"),
        ("curl -s http://127.0.0.1:1/   # → 200 OK", "exited with 7"),
        ("false", "exited with 1"),
    ],
)
def test_a_readme_that_drifted_fails_naming_the_line(
    live_dev: LiveDev, tmp_path: Path, block: str, expected: str
) -> None:
    markdown = f"{DEV_BLOCK}\n```bash\ntrue   # fine\n{block}\necho never\n```\n"
    pasted = paste(live_dev, markdown, tmp_path)
    assert pasted.returncode != 0
    assert pasted.stderr.startswith("README line 8: ") and expected in pasted.stderr
    assert "never" not in pasted.stdout.read_text() and pasted.checked == set()


# Pasted with no `export` line: only what is in the folder.
BY_FOLDER = r"""```bash
python examples/revocation_listener.py --durable by-folder &
URL=$(python3 -c 'import json; print(json.load(open(".keyledger/dev.json"))["api_url"])')
AUTH="Authorization: Bearer $(cat .keyledger/admin-key)" JSON="Content-Type: application/json"
NEW=$(curl -s -X POST $URL/v1/orgs/folder/keys -H "$AUTH" -H "$JSON" \
  -d '{"name": "x", "type": "secret"}')   # → 201 Created
KEY=$(echo "$NEW" | python3 -c 'import json, sys; print(json.load(sys.stdin)["key"]["id"])')
curl -s -X POST $URL/v1/orgs/folder/keys/$KEY/revoke -H "$AUTH" -H "$JSON" \
  -d '{"reason": "other"}'   # → 200 OK
```
"""


def test_the_listener_finds_the_dev_from_its_folder_alone(
    live_dev: LiveDev, tmp_path: Path
) -> None:
    """No ``export`` pasted: the example reads the NATS URL, stream and prefix from dev.json."""
    evicted = re.compile(r"evicted key_\w+ \(org folder, reason other,")
    pasted = paste(live_dev, BY_FOLDER, tmp_path, until=lambda out: bool(evicted.search(out)))
    output = pasted.stdout.read_text()
    assert pasted.returncode == 0 and len(pasted.checked) == 2, pasted.stderr
    assert evicted.search(output), output[-2000:]
