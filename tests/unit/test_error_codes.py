"""Error codes are a closed list, and every one of them has its HTTP status.

mypy already refuses a code outside ``ErrorCode`` wherever a ``KeyledgerError``
is built; these tests make the same promise without a type checker: the
status table is total, and every code the code base spells out is in the list.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from service.errors import ERROR_CODES, KeyledgerError
from service.http.errors import STATUS_BY_CODE, error_response

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("events", "service", "projections", "bench", "examples")
# Calls whose first argument is an error code, and calls whose last argument is one.
FIRST_ARGUMENT_IS_A_CODE = {"KeyledgerError", "error_response", "_invalid"}
LAST_ARGUMENT_IS_A_CODE = {"position_of", "choice_of"}


def _name(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def spelled_codes(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, code) of every string literal passed where an error code is expected."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _name(node)
        candidates: list[ast.expr] = [k.value for k in node.keywords if k.arg == "code"]
        if name in FIRST_ARGUMENT_IS_A_CODE and node.args:
            candidates.append(node.args[0])
        if name in LAST_ARGUMENT_IS_A_CODE and len(node.args) >= 3:
            candidates.append(node.args[-1])
        found += [
            (c.lineno, c.value)
            for c in candidates
            if isinstance(c, ast.Constant) and isinstance(c.value, str)
        ]
    return found


def product_files() -> list[Path]:
    return sorted(p for top in PRODUCT for p in (ROOT / top).rglob("*.py"))


def test_every_code_has_a_status_and_the_table_has_nothing_else() -> None:
    assert set(STATUS_BY_CODE) == set(ERROR_CODES)
    assert len(ERROR_CODES) == len(set(ERROR_CODES))


@pytest.mark.parametrize("code", ERROR_CODES)
def test_each_status_is_a_client_or_server_error(code: str) -> None:
    assert 400 <= STATUS_BY_CODE[code] <= 599


def test_every_code_the_code_base_spells_is_in_the_list() -> None:
    files = product_files()
    assert len(files) > 50  # the walk found the code base
    unknown, seen = [], set()
    for path in files:
        for line, code in spelled_codes(ast.parse(path.read_text(), str(path))):
            seen.add(code)
            if code not in ERROR_CODES:
                unknown.append(f"{path.relative_to(ROOT)}:{line}: {code}")
    assert unknown == []
    # The scan does see codes (a scanner that finds nothing would pass anything).
    assert {"key_not_found", "invalid_cursor", "internal_error", "active_key_limit"} <= seen


def test_the_scanner_catches_a_misspelt_code() -> None:
    source = (
        'raise KeyledgerError("key_not_fund", "no such key")\n'
        'error_response(code="rate_limted", message="", request_id="")\n'
        'q.position_of(query, "after", "invalid_cursr")\n'
    )
    codes = [code for _, code in spelled_codes(ast.parse(source))]
    assert sorted(codes) == ["invalid_cursr", "key_not_fund", "rate_limted"]
    assert not set(codes) & set(ERROR_CODES)


@pytest.mark.parametrize(
    ("code", "status"),
    [("key_not_found", 404), ("active_key_limit", 409), ("invalid_limit", 422),
     ("log_truncated", 503), ("internal_error", 500), ("method_not_allowed", 405)],
)  # fmt: skip
def test_an_error_answers_with_its_codes_status(code: str, status: int) -> None:
    response = error_response(code, "message", "req_1")
    assert response.status == status


def test_a_code_outside_the_list_is_not_silently_a_400() -> None:
    error = KeyledgerError("no_such_code", "typo")
    with pytest.raises(KeyError):
        error_response(error.code, error.message, "req_1")
