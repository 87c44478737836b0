"""Every relative link in README.md and docs/ leads somewhere: the file, and the heading."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_LINK = re.compile(r"\]\(([^)\s]+)\)")
_HEADING = re.compile(r"^#{1,6} (.+)$", re.M)
_FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def anchor_of(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes."""
    text = heading.strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    return {anchor_of(heading) for heading in _HEADING.findall(text)}


def test_anchor_of_follows_githubs_rules() -> None:
    assert anchor_of("`GET /v1/authorize` (reverse proxies)") == "get-v1authorize-reverse-proxies"
    assert anchor_of("Consistency: `min_position`") == "consistency-min_position"
    assert anchor_of("6. A cut log is noticed") == "6-a-cut-log-is-noticed"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_relative_links_resolve(page: Path) -> None:
    text = _FENCE.sub("", page.read_text(encoding="utf-8"))
    broken = []
    for target in _LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue  # http:, https:, mailto:
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (
            anchor and linked.suffix == ".md" and anchor not in anchors(linked)
        ):
            broken.append(target)
    assert not broken, f"{page.name}: {broken}"


# --- pointers from the code into docs/ -----------------------------------------------
# The repository is self-contained: comments, docstrings, messages and pages point to
# docs/ (a page, an anchor, or a page and a numbered section: the section sign, then
# the number), never to a document that is not in it. The section sign, the name of that
# outside document and the broken examples are spelled so that this file does not match.

SECTION = "\u00a7"
POINTING_FILES = (".py", ".md", ".sql", ".toml")
_NOT_OURS = {"__pycache__", "node_modules", "build", "dist"}
_OUTSIDE_DOCUMENT = re.compile(r"\b\u0053PEC\b")
_SECTIONS = re.compile(r"([\w./-]+\.md) (\u00a7\d+(?:(?:, | and )\u00a7\d+)*)")
_RFC_SECTION = re.compile(r"\bRFC \d+ \u00a7\d+")
_DOCS_PATH = re.compile(r"\bdocs/([\w-]+\.md)(?:#([\w-]+))?")


def repository_files() -> list[Path]:
    """Every file of ours that can carry a pointer: no hidden folder (.venv, .git), no build."""
    found = []
    for folder, subfolders, files in os.walk(ROOT):
        subfolders[:] = [
            name
            for name in subfolders
            if not name.startswith(".") and name not in _NOT_OURS and not name.endswith(".egg-info")
        ]
        found += [Path(folder) / name for name in files if name.endswith(POINTING_FILES)]
    return sorted(found)


def stray_references(text: str) -> list[str]:
    """Lines that name the outside document, or carry a section sign not tied to a page."""
    stray = []
    for line in text.splitlines():
        tied = _RFC_SECTION.sub("", _SECTIONS.sub("", line))
        if _OUTSIDE_DOCUMENT.search(line) or SECTION in tied:
            stray.append(line.strip())
    return stray


def unresolved_pointers(path: Path, text: str) -> list[str]:
    """Pointers to a page, a numbered section or an anchor in docs/ that is not there."""
    broken = []
    for page_name, sections in _SECTIONS.findall(text):
        page = ROOT / page_name if page_name.startswith("docs/") else path.parent / page_name
        numbers = re.findall(r"\d+", sections)
        headings = page.read_text(encoding="utf-8") if page.is_file() else ""
        broken += [
            f"{page_name} {SECTION}{n}"
            for n in numbers
            if not re.search(rf"^#{{1,6}} {n}\. ", headings, re.M)
        ]
    if path.suffix != ".md":  # Markdown links are checked by test_relative_links_resolve.
        for page_name, anchor in _DOCS_PATH.findall(text):
            page = ROOT / "docs" / page_name
            if not page.is_file() or (anchor and anchor not in anchors(page)):
                broken.append(f"docs/{page_name}#{anchor}" if anchor else f"docs/{page_name}")
    return broken


def test_stray_references_are_found() -> None:
    outside = "SP" + "EC"
    assert stray_references(f"Bad input (see {outside} {SECTION}8).")
    assert stray_references(f"as the {outside} says")
    assert stray_references(f"1 while the log is cut ({SECTION}10).")
    assert not stray_references(f"Poison (docs/security.md {SECTION}1 and {SECTION}5).")
    assert not stray_references(f"[security.md {SECTION}5](security.md#5-poison)")
    assert not stray_references(f"standard base64 (RFC 4648 {SECTION}4)")
    assert not stray_references("DECIDER_SPECS and SPECTRUM are other words")


def test_unresolved_pointers_are_found() -> None:
    here, docs = ROOT / "service" / "example.py", "docs" + "/"
    assert unresolved_pointers(here, f"{docs}security.md {SECTION}99") == [
        f"{docs}security.md {SECTION}99"
    ]
    assert unresolved_pointers(here, f"{docs}security.md {SECTION}5, {SECTION}42") == [
        f"{docs}security.md {SECTION}42"
    ]
    assert unresolved_pointers(here, f"{docs}api.md#no-such-heading") == [
        f"{docs}api.md#no-such-heading"
    ]
    assert unresolved_pointers(here, f"{docs}missing.md") == [f"{docs}missing.md"]
    assert unresolved_pointers(here, f"{docs}api.md#errors, {docs}security.md {SECTION}6") == []


def test_the_scan_sees_code_docs_and_migrations() -> None:
    names = {path.relative_to(ROOT).as_posix() for path in repository_files()}
    assert {"README.md", "pyproject.toml", "service/settings.py", "docs/api.md"} <= names
    assert any(name.startswith("service/store/migrations/") for name in names)
    assert not any(name.startswith(".") for name in names)


def test_no_pointer_leaves_the_repository() -> None:
    stray = {
        path.relative_to(ROOT).as_posix(): lines
        for path in repository_files()
        if (lines := stray_references(path.read_text(encoding="utf-8")))
    }
    assert not stray, f"point to docs/ instead: {stray}"


def test_every_pointer_into_docs_resolves() -> None:
    broken = {
        path.relative_to(ROOT).as_posix(): pointers
        for path in repository_files()
        if (pointers := unresolved_pointers(path, path.read_text(encoding="utf-8")))
    }
    assert not broken, broken
