"""Reading the README's shell blocks and their claims (no shell is run here).

The run itself, against a live ``keyledger dev``, is tests/integration/test_readme.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.readme_shell import (
    Claim,
    ReadmeError,
    parse_blocks,
    parse_claim,
    sample_matches,
    script,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def fenced(body: str, language: str = "bash", marker: str = "") -> str:
    return f"Text.\n{marker + chr(10) if marker else ''}```{language}\n{body}\n```\n"


@pytest.mark.parametrize(
    ("comment", "claim"),
    [
        ("# → 201 Created", Claim(201, "Created")),
        ("# → 200 OK (the key's history)", Claim(200, "OK")),
        (
            '# → 409 Conflict {"code": "key_not_mutable", …}',
            Claim(409, "Conflict", ('"code": "key_not_mutable"',)),
        ),
        (
            '# → 200 OK with ETag {"a": 1, …, "b": 2}',
            Claim(200, "OK", ('"a": 1', '"b": 2'), ("ETag",)),
        ),
        ("# prints the secret", None),
    ],
)
def test_a_claim_is_read_from_the_comment_that_ends_a_command(
    comment: str, claim: Claim | None
) -> None:
    assert parse_claim(comment, 1) == claim


@pytest.mark.parametrize(
    ("comment", "reason"),
    [
        ("# → 201 OK", "201 is 'Created', not 'OK'"),
        ("# → 299 Whatever", "299 is no HTTP status"),
        ("# → soon", "cannot read the claim"),
    ],
)
def test_a_claim_that_cannot_hold_is_refused(comment: str, reason: str) -> None:
    with pytest.raises(ReadmeError, match=reason):
        parse_claim(comment, 7)


def test_a_curl_without_its_claim_is_refused_naming_its_line() -> None:
    with pytest.raises(ReadmeError, match="README line 4: a curl command without its claim"):
        parse_blocks(fenced("echo hi\ncurl -s http://x/"))


def test_continuations_and_open_quotes_join_one_command_and_its_claim_ends_it() -> None:
    body = (
        "# a comment line, with an apostrophe: it's not a quote\n"
        "CREATED=$(curl -s -X POST $KL/keys \\\n"
        '  -d \'{"name": "Bot",\n'
        '       "scopes": ["a#b"]}\')   # → 201 Created\n'
        "curl -s $KL/keys/$KEY -H 'X: y' \\\n"
        "  | python3 -c 'import sys'   # → 200 OK\n"
        "echo done   # it's done"
    )
    (block,) = parse_blocks(fenced(body))
    assert [(c.line, c.claim) for c in block.commands] == [
        (4, Claim(201, "Created")),
        (7, Claim(200, "OK")),
        (9, None),
    ]
    assert block.commands[0].text.endswith("# → 201 Created")
    assert block.commands[2].code == "echo done"


def test_a_command_that_never_ends_is_refused() -> None:
    with pytest.raises(ReadmeError, match="never ends"):
        parse_blocks(fenced("echo 'open"))


def test_console_blocks_run_their_prompts_only() -> None:
    (block,) = parse_blocks(fenced("$ echo hi\nhi\n$ true", language="console"))
    assert [c.code for c in block.commands] == ["echo hi", "true"]


def test_an_indented_fence_in_a_list_item_is_a_block_too() -> None:
    markdown = "- tail it:\n\n  ```bash\n  keyledger events tail \\\n    --max 1\n  ```\n"
    (block,) = parse_blocks(markdown)
    assert [(c.line, c.text) for c in block.commands] == [
        (4, "keyledger events tail \\\n  --max 1")
    ]


def test_only_shell_languages_are_commands() -> None:
    blocks = parse_blocks(fenced("curl x", language="python") + fenced("curl y", language=""))
    assert [(b.is_shell, b.commands) for b in blocks] == [(False, ()), (False, ())]


@pytest.mark.parametrize(
    ("marker", "reason"),
    [
        ("<!-- readme-test: skip -->", "with the reason"),
        ("<!-- readme-test: later: some day -->", "KIND"),
    ],
)
def test_a_marker_needs_a_known_kind_and_a_reason(marker: str, reason: str) -> None:
    with pytest.raises(ReadmeError, match=reason):
        parse_blocks(fenced("pip install x", marker=marker))


def test_a_marker_must_stand_right_above_a_fence() -> None:
    with pytest.raises(ReadmeError, match="must precede a fence"):
        parse_blocks("<!-- readme-test: skip: installs -->\n\n```bash\npip install x\n```\n")


def test_the_script_runs_what_is_not_skipped_and_pastes_the_dev_exports() -> None:
    markdown = (
        fenced("pip install x", marker="<!-- readme-test: skip: installs -->")
        + fenced("keyledger dev", marker="<!-- readme-test: dev: started by the test -->")
        + fenced('curl -s $KL/healthz   # → 200 OK {"status": "ok"}')
    )
    text = script(parse_blocks(markdown), "export KEYLEDGER_API_URL='http://127.0.0.1:1'")
    assert "pip install" not in text and "keyledger dev" not in text
    commands = text[text.index("export KEYLEDGER_API_URL") :]
    assert commands.splitlines()[1:] == [
        "# README.md, the block at line 13",
        "kl_begin 13",
        'curl -s $KL/healthz   # → 200 OK {"status": "ok"}',
        'kl_end 200 OK \'"status": "ok"\'',
    ]


def test_a_sample_matches_in_order_with_ellipses_for_anything() -> None:
    output = "running on http://127.0.0.1:5000\n  data: /tmp/x\nkey:\nsk_live_abc\nbye"
    sample = "running on http://127.0.0.1:8080\n  …\nsk_live_…\nbye"
    swap = {"http://127.0.0.1:8080": "http://127.0.0.1:5000"}
    assert sample_matches(sample, output, swap) == []
    assert sample_matches("bye\nsk_live_…", output, swap) == ["sk_live_…"]
    assert sample_matches("running on http://127.0.0.1:8080", output, {}) != []


def test_the_readme_can_be_checked_as_it_stands() -> None:
    blocks = parse_blocks(README.read_text(encoding="utf-8"))
    shell = [block for block in blocks if block.is_shell]
    # `keyledger dev` once, before anything runs (only skipped blocks come before it).
    (dev,) = [i for i, block in enumerate(shell) if block.marker == "dev"]
    assert [command.code for command in shell[dev].commands] == ["keyledger dev"]
    assert all(block.marker == "skip" for block in shell[:dev])
    assert [block.marker for block in blocks].count("banner") == 1
    assert sum(1 for b in shell if b.marker is None for c in b.commands if c.claim) >= 15
