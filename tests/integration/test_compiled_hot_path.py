"""The compiled build (setup.py, ``KEYLEDGER_COMPILE=1``) behaves as the sources do.

The suite runs on the interpreted sources. Here a copy of the tree is built
with its hot paths compiled (``bench.compiled_tree``, as ``bench.verify``
does), every listed module is checked to be an extension, and the tests of
what those modules do are run again in that copy: the verify decision and its
check order, key material, the request context and access log, the verify
and authorize routes over HTTP against PostgreSQL, what must never leak; the
decider, batch planning, the key lifecycle, the index, the write path and
the projections against PostgreSQL.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.compiled_tree import build, compiled_in, compiled_modules

# Tests of the compiled modules' behaviour that do not replace their functions (a
# compiled module calls its own functions directly, so a monkeypatch there would
# not take, and such tests say nothing about the build).
COMPILED_TESTS = [
    "tests/unit/test_verification.py",
    "tests/unit/test_key_material.py",
    "tests/unit/test_request_context.py",
    "tests/unit/test_access_log.py",
    "tests/unit/test_usage_counts.py",
    "tests/unit/test_verdict_cache.py",
    "tests/unit/test_truncation_guard.py",
    "tests/integration/test_verify_api.py",
    "tests/integration/test_malformed_http.py",
    "tests/integration/test_no_secrets_in_logs.py",
    # The write path.
    "tests/unit/test_decider.py",
    "tests/unit/test_decider_changes.py",
    "tests/unit/test_bulk_revocation_decider.py",
    "tests/unit/test_command_batch.py",
    "tests/unit/test_command_quota.py",
    "tests/unit/test_in_memory_use_cases.py",
    "tests/unit/test_read_side.py",
    "tests/integration/test_group_commit.py",
    "tests/integration/test_key_commands_api.py",
    "tests/integration/test_key_lifecycle.py",
    "tests/integration/test_key_changes_api.py",
    "tests/integration/test_write_path.py",
    "tests/integration/test_projections.py",
    "tests/integration/test_verification_index.py",
]


@pytest.fixture(scope="module")
def compiled_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("compiled"))


@pytest.mark.slow
def test_every_hot_path_module_is_compiled(compiled_tree: Path) -> None:
    assert compiled_in(compiled_tree) == compiled_modules()
    probe = subprocess.run(
        [
            sys.executable,
            "-c",
            "from service.verification.build import hot_path; print(hot_path())",
        ],
        cwd=compiled_tree,
        env={**os.environ, "PYTHONPATH": str(compiled_tree)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "compiled"


@pytest.mark.slow
def test_the_verification_tests_pass_on_the_compiled_build(compiled_tree: Path) -> None:
    environment = {**os.environ, "PYTHONPATH": str(compiled_tree)}
    ran = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *COMPILED_TESTS],
        cwd=compiled_tree,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert ran.returncode == 0, ran.stdout[-6000:] + ran.stderr[-2000:]
    assert " passed" in ran.stdout.splitlines()[-1]
