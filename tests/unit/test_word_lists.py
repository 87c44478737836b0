"""The closed word lists (``keyledger_client.events.vocabulary``) are written once and used
everywhere.

Request bodies, answers, the OpenAPI document, key material and the verify
codes all take their choices from there; no other module spells a list out.
"""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest
from pydantic import BaseModel

from events import vocabulary as words
from service.domain import key_material
from service.domain.durations import expiry_from
from service.http import response_shapes as shapes
from service.http.schemas import GenerateKeyBody, RateLimitBody, RevokeKeyBody
from service.http.verify_routes import VerifyBody
from service.verification.policy import HTTP_STATUS, VerifyCode

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("keyledger_client", "events", "service", "projections", "bench", "examples")
LISTS: dict[str, tuple[str, ...]] = {
    "key types": words.KEY_TYPES,
    "environments": words.ENVIRONMENTS,
    "statuses": words.STATUSES,
    "algorithms": words.ALGORITHMS,
    "revoke reasons": words.REVOKE_REASONS,
    "rate windows": words.RATE_WINDOWS,
    "expires_in choices": words.EXPIRES_IN_CHOICES,
}


def enum_of(model: type[BaseModel], field: str) -> list[Any]:
    """The ``enum`` of a field in the model's JSON Schema (through ``anyOf`` for optionals)."""
    schema = model.model_json_schema()["properties"][field]
    for option in [schema, *schema.get("anyOf", [])]:
        if "enum" in option:
            return list(option["enum"])
    raise AssertionError(f"{model.__name__}.{field} has no enum")


@pytest.mark.parametrize(
    ("model", "field", "expected"),
    [
        (GenerateKeyBody, "type", words.KEY_TYPES),
        (GenerateKeyBody, "environment", words.ENVIRONMENTS),
        (GenerateKeyBody, "algorithm", words.ALGORITHMS),
        (GenerateKeyBody, "expires_in", words.EXPIRES_IN_CHOICES),
        (RateLimitBody, "window", words.RATE_WINDOWS),
        (RevokeKeyBody, "reason", words.REVOKE_REASONS),
        (VerifyBody, "environment", words.ENVIRONMENTS),
        (shapes.Key, "type", words.KEY_TYPES),
        (shapes.Key, "environment", words.ENVIRONMENTS),
        (shapes.Key, "status", words.STATUSES),
        (shapes.Key, "algorithm", words.ALGORITHMS),
        (shapes.VerifiedKey, "type", words.KEY_TYPES),
        (shapes.VerifiedKey, "environment", words.ENVIRONMENTS),
        (shapes.VerifyResult, "code", get_args(VerifyCode)),
    ],
)
def test_bodies_and_answers_offer_exactly_the_vocabulary(
    model: type[BaseModel], field: str, expected: tuple[str, ...]
) -> None:
    assert enum_of(model, field) == list(expected)


def test_the_status_groups_split_the_statuses() -> None:
    assert set(words.STATUSES) == words.TERMINAL_STATUSES | words.LIVE_STATUSES
    assert not words.TERMINAL_STATUSES & words.LIVE_STATUSES


def test_every_rate_window_has_its_length() -> None:
    assert list(words.RATE_WINDOW_SECONDS) == list(words.RATE_WINDOWS)
    lengths = list(words.RATE_WINDOW_SECONDS.values())
    assert lengths == sorted(set(lengths)) and lengths[0] >= 1


def test_every_verify_code_has_its_status() -> None:
    assert list(HTTP_STATUS) == list(get_args(VerifyCode))


@pytest.mark.parametrize("choice", words.EXPIRES_IN_CHOICES)
def test_every_expires_in_choice_resolves(choice: words.ExpiresIn) -> None:
    now = datetime(2026, 8, 31, tzinfo=UTC)
    moment = expiry_from(choice, now)
    assert (moment is None) == (choice == "never")
    assert moment is None or moment > now


@pytest.mark.parametrize("environment", words.ENVIRONMENTS)
@pytest.mark.parametrize("key_type", [t for t in words.KEY_TYPES if t != "signing"])
def test_every_bearer_key_type_and_environment_makes_a_well_formed_secret(
    key_type: words.KeyType, environment: words.Environment
) -> None:
    secret = key_material.new_secret(key_type, environment)
    assert secret.startswith(f"{key_material.PREFIXES[key_type]}_{environment}_")
    assert key_material.is_well_formed(secret)


def test_only_signing_keys_have_no_secret_prefix() -> None:
    assert set(words.KEY_TYPES) - set(key_material.PREFIXES) == {"signing"}


def test_signing_key_pairs_exist_for_every_algorithm() -> None:
    # RSA-2048 generation takes tens of milliseconds; both are still cheap enough here.
    for algorithm in words.ALGORITHMS:
        pair = key_material.new_signing_key_pair(algorithm)
        assert pair.public_pem.startswith("-----BEGIN PUBLIC KEY-----")


# -- written once ------------------------------------------------------------------


def spelled_lists(tree: ast.AST) -> list[tuple[int, str]]:
    """(line, list name) of every literal tuple/list/set or ``Literal[...]`` spelling a list."""
    found = []
    wanted = {frozenset(values): name for name, values in LISTS.items()}
    for node in ast.walk(tree):
        # ``Literal["a", "b"]`` is a subscript by a tuple: the walk meets that tuple too.
        if not isinstance(node, ast.Tuple | ast.List | ast.Set):
            continue
        elements = node.elts
        if not elements or not all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in elements
        ):
            continue
        values = frozenset(e.value for e in elements if isinstance(e, ast.Constant))
        if values in wanted:
            found.append((node.lineno, wanted[values]))
    return found


def test_no_module_but_the_vocabulary_spells_a_list_out() -> None:
    home = ROOT / "keyledger_client" / "events" / "vocabulary.py"
    files = sorted(p for top in PRODUCT for p in (ROOT / top).rglob("*.py") if p != home)
    assert len(files) > 50
    spelled = [
        f"{path.relative_to(ROOT)}:{line}: {name}"
        for path in files
        for line, name in spelled_lists(ast.parse(path.read_text(), str(path)))
    ]
    assert spelled == []
    assert {name for _, name in spelled_lists(ast.parse(home.read_text()))} == set(LISTS)


def test_the_spelling_scanner_sees_each_form() -> None:
    source = (
        'KEY_TYPES = ("secret", "embed", "signing")\n'
        'environment: Literal["live", "test"]\n'
        'if status in {"active", "disabled", "revoked", "expired"}: pass\n'
        'windows = ["1s", "1m", "1h", "1d"]\n'
        'partial = ("revoked", "expired")\n'
    )
    assert sorted(name for _, name in spelled_lists(ast.parse(source))) == [
        "environments",
        "key types",
        "rate windows",
        "statuses",
    ]
