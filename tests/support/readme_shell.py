"""The README's shell blocks as one bash script that checks the HTTP statuses they claim.

A shell block (```sh, ```bash, ```shell, ```console, ```zsh) is run unless the line
right above its opening fence is a marker, ``<!-- readme-test: KIND: reason -->``:

- ``skip``: not run (installs packages, needs Docker, is the test command itself…);
- ``dev``: ``keyledger dev``, which the test starts as a process of its own; the
  banner's ``export`` lines take the block's place, as a user pastes them;
- ``banner``: a sample of that banner (any language), compared line by line.

A ``curl`` command must end with its claim, ``# → 201 Created``: the status and its
reason phrase; optionally ``with ETag, X-Other`` (headers the response carries), a
``{…}`` fragment of the body (its parts between ``…`` appear in it verbatim) and a
``(note)`` for the reader. A command without ``curl`` must simply succeed:
the script runs with ``set -euo pipefail``, in one bash process, so variables flow
from block to block as they do in the one shell a user pastes into.
"""

from __future__ import annotations

import http
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

SHELL_LANGUAGES = frozenset({"sh", "bash", "shell", "console", "zsh"})
MARKER_KINDS = frozenset({"skip", "dev", "banner"})

# Fences may be indented (in a list item); their lines lose that indentation.
_FENCE = re.compile(r"^(\s*)```\s*([\w+-]*)\s*$")
_MARKER = re.compile(
    r"^\s*<!--\s*readme-test:\s*(?P<kind>[\w-]+)\s*(?::\s*(?P<reason>.*?))?\s*-->$"
)
_CLAIM = re.compile(
    r"→\s*(?P<status>\d{3})\s+(?P<phrase>[A-Za-z][A-Za-z' -]*?)"
    r"(?:\s+with\s+(?P<headers>[A-Za-z-]+(?:,\s*[A-Za-z-]+)*))?"
    r"\s*(?P<body>\{.*\})?\s*(?:\(.*\))?$"
)
_CURL = re.compile(r"(?:^|[\s;|&($`])curl\s")
_CONTINUED = ("\\", "|", "&&", "||")


class ReadmeError(ValueError):
    """The README cannot be checked as it stands: the message names the line and why."""


@dataclass(frozen=True, slots=True)
class Claim:
    """What a command claims: the HTTP status of its one request, and parts of the body."""

    status: int
    phrase: str
    body_parts: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Command:
    """One logical shell command (continuation lines joined), from README line ``line``."""

    line: int
    text: str
    claim: Claim | None

    @property
    def code(self) -> str:
        """The command without its comments."""
        return _split_comments(self.text)[0].strip()


@dataclass(frozen=True, slots=True)
class Block:
    """A fenced block: where it starts, its language, marker and (for shell) commands."""

    line: int
    language: str
    body: str
    marker: str | None
    reason: str | None
    commands: tuple[Command, ...]

    @property
    def is_shell(self) -> bool:
        """True for the languages a user pastes into a shell."""
        return self.language in SHELL_LANGUAGES


def _split_comments(text: str) -> tuple[str, list[str], str | None]:
    """``text`` without shell comments, the comments, and the quote still open at its end."""
    code: list[str] = []
    comments: list[str] = []
    quote: str | None = None
    i = 0
    while i < len(text):
        char = text[i]
        if quote == "'":
            quote = None if char == "'" else quote
        elif char == "\\" and i + 1 < len(text):
            code.append(text[i : i + 2])
            i += 2
            continue
        elif quote == '"':
            quote = None if char == '"' else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or text[i - 1] in " \t\n;|&("):
            end = text.find("\n", i)
            end = len(text) if end == -1 else end
            comments.append(text[i:end])
            i = end
            continue
        code.append(char)
        i += 1
    return "".join(code), comments, quote


def parse_claim(comment: str, line: int) -> Claim | None:
    """The claim in a comment (``# → 200 OK {"valid": true, …}``), if it makes one."""
    if "→" not in comment:
        return None
    found = _CLAIM.search(comment)
    if found is None:
        raise ReadmeError(f"README line {line}: cannot read the claim in {comment!r}")
    status = int(found["status"])
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        raise ReadmeError(f"README line {line}: {status} is no HTTP status") from None
    if found["phrase"] != phrase:
        raise ReadmeError(f"README line {line}: {status} is {phrase!r}, not {found['phrase']!r}")
    parts: tuple[str, ...] = ()
    if found["body"]:
        inside = found["body"][1:-1]
        parts = tuple(p.strip(" ,") for p in inside.split("…") if p.strip(" ,"))
    headers = tuple(h.strip() for h in found["headers"].split(",")) if found["headers"] else ()
    return Claim(status, phrase, parts, headers)


def _commands(lines: list[str], first_line: int, console: bool) -> tuple[Command, ...]:
    """Logical commands: continuation lines and open quotes joined, comment lines dropped."""
    commands: list[Command] = []
    pending: list[str] = []
    start = first_line
    for number, raw in enumerate(lines, first_line):
        line = raw
        if not pending:
            if console:
                if not line.startswith("$ "):
                    continue  # a console block's output
                line = line[2:]
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            start = number
        pending.append(line)
        text = "\n".join(pending)
        code, comments, quote = _split_comments(text)
        if quote is not None or code.rstrip().endswith(_CONTINUED):
            continue
        # The claim is the comment that ends the command (on its last line).
        ending = comments[-1] if comments and text.endswith(comments[-1]) else ""
        claim = parse_claim(ending, number)
        if claim is None and _CURL.search(code):
            raise ReadmeError(
                f"README line {start}: a curl command without its claim (end it with"
                " `# → 200 OK`, the status the README promises)"
            )
        commands.append(Command(start, text, claim))
        pending = []
    if pending:
        raise ReadmeError(f"README line {start}: the command never ends (an open quote?)")
    return tuple(commands)


def parse_blocks(markdown: str) -> list[Block]:
    """Every fenced block of ``markdown``, with its marker and, for shell, its commands."""
    lines = markdown.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if opening is None:
            if _MARKER.match(lines[i]) and not (i + 1 < len(lines) and _FENCE.match(lines[i + 1])):
                raise ReadmeError(f"README line {i + 1}: a readme-test marker must precede a fence")
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip() == "```"), None)
        if end is None:
            raise ReadmeError(f"README line {i + 1}: a fence that is never closed")
        indent, language = len(opening[1]), opening[2].lower()
        marker = _MARKER.match(lines[i - 1]) if i > 0 else None
        kind = reason = None
        if marker is not None:
            kind, reason = marker["kind"], marker["reason"]
            if kind not in MARKER_KINDS or not reason:
                raise ReadmeError(
                    f"README line {i}: a marker is `<!-- readme-test: KIND: reason -->`, KIND"
                    f" one of {sorted(MARKER_KINDS)}, with the reason it is not run as it is"
                )
        body_lines = [
            line[indent:] if line[:indent].isspace() else line for line in lines[i + 1 : end]
        ]
        shell = language in SHELL_LANGUAGES
        commands = _commands(body_lines, i + 2, language == "console") if shell else ()
        blocks.append(Block(i + 2, language, "\n".join(body_lines), kind, reason, commands))
        i = end + 1
    return blocks


# Every curl goes through a function that records the status of each response and keeps
# its body, without changing what the command prints; see the file for the rest.
PRELUDE = (Path(__file__).parent / "readme_prelude.sh").read_text()


def script(blocks: list[Block], dev_exports: str) -> str:
    """One bash script running every runnable shell block; the dev block becomes its exports."""
    parts = [PRELUDE]
    for block in blocks:
        if not block.is_shell or block.marker == "skip":
            continue
        parts.append(f"# README.md, the block at line {block.line}")
        if block.marker == "dev":
            parts.append(dev_exports)
            continue
        for command in block.commands:
            parts.append(f"kl_begin {command.line}")
            parts.append(command.text)
            if command.claim is not None:
                claim = command.claim
                words = [
                    str(claim.status),
                    claim.phrase,
                    *(f"header:{name}" for name in claim.headers),
                    *claim.body_parts,
                ]
                parts.append("kl_end " + " ".join(shlex.quote(word) for word in words))
    return "\n".join(parts) + "\n"


def sample_matches(sample: str, output: str, replacements: dict[str, str]) -> list[str]:
    """Lines of ``sample`` not found, in order, in ``output`` (``…`` stands for anything)."""
    missing = []
    remaining = output.splitlines()
    for line in sample.splitlines():
        if not line.strip() or line.strip() == "…":
            continue
        for old, new in replacements.items():
            line = line.replace(old, new)
        pattern = re.compile(
            "^" + ".*?".join(re.escape(piece) for piece in line.rstrip().split("…")) + "$"
        )
        found = next((i for i, got in enumerate(remaining) if pattern.match(got.rstrip())), None)
        if found is None:
            missing.append(line)
        else:
            remaining = remaining[found + 1 :]
    return missing
