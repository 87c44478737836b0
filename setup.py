"""keyledger's build: pure Python, or with its hot paths compiled (mypyc).

Everything is configured in pyproject.toml; this file only adds the compiled
modules, when asked for with ``KEYLEDGER_COMPILE=1``:

    KEYLEDGER_COMPILE=1 pip install .          # a deployment (the Dockerfile builds this way)
    python -m bench.compiled_tree DIR          # a compiled copy of the tree, to try

Compiled, the modules every ``POST /v1/verify`` and ``GET /v1/authorize`` runs
through take bearer verification from ≈ 0.7× to 0.82–0.90× the throughput of
a bare aiohttp handler, and the write path's spend 12–17 % less CPU per key
made (docs/benchmarks.md; ``python -m bench.verify`` and
``python -m bench.generate_key`` measure both builds). They
behave the same either way: the suite runs on the pure Python sources, and
``tests/integration/test_compiled_hot_path.py`` runs the tests of the
compiled modules again on a compiled build. Editable installs stay pure Python, so that
an edited source is what runs.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Any

from setuptools import setup

# The modules compiled, by path: those every verify request runs through, in the order
# it meets them, then the write path's own (the decider and what plans a batch of
# commands around it). Only plain functions and classes of their own: pydantic and
# msgspec models (whose classes mypyc cannot derive), generic dataclasses and classes
# made with object.__new__ stay interpreted, as do the modules that hold them.
COMPILED = [
    "service/http/request_context.py",
    "service/http/context.py",
    "service/clock.py",
    "service/truncation_guard.py",
    "service/verification/callers.py",
    "service/verification/verifier.py",
    "service/verification/policy.py",
    "service/domain/key_material.py",
    "service/log_config.py",
    "service/key_usage.py",
    "service/usage_analytics.py",
    # The write path.
    "service/domain/decider.py",
    "service/command_batch.py",
    "service/key_lifecycle.py",
    "service/verification/index.py",
    "service/key_view.py",
]
# The compiler is mypy's; the same release the project type-checks with.
MYPY = "mypy==2.4.1"


def compile_asked() -> bool:
    """Whether KEYLEDGER_COMPILE asks for a compiled build (1/true/yes; 0/false/no/unset not)."""
    value = os.environ.get("KEYLEDGER_COMPILE", "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise SystemExit(f"KEYLEDGER_COMPILE is 1 (a compiled build) or 0, not {value!r}")


def compiled_build() -> dict[str, Any]:
    """``setup()``'s arguments for the compiled modules (none unless KEYLEDGER_COMPILE=1)."""
    if not compile_asked():
        return {}
    if {"editable_wheel", "develop"} & set(sys.argv):
        # The compiled modules would land beside their sources and be imported instead of
        # them: an edited source would not run, and a later plain install would not remove
        # them.
        raise SystemExit(
            "KEYLEDGER_COMPILE=1 is for an install (pip install .), not an editable one:"
            " an edited source would not be what runs (README, 'A compiled build')"
        )
    here = Path(__file__).resolve().parent
    # mypyc compiles from the types it infers: the dependencies' type information
    # must be there too, or their values would be compiled as untyped objects.
    project = tomllib.loads((here / "pyproject.toml").read_text())["project"]
    requirements = [MYPY, *project["dependencies"]]
    try:
        from mypyc.build import mypycify
    except ImportError:
        # setuptools first asks which packages the build needs (setup_requires),
        # installs them, then runs this file again: mypyc is there the second time.
        return {"setup_requires": requirements}
    return {
        "setup_requires": requirements,
        # pyproject.toml's [tool.mypy] applies; its overrides for modules these do not
        # import would be reported as unused, and mypyc stops at any report.
        "ext_modules": mypycify(["--no-warn-unused-configs", *COMPILED], opt_level="3"),
    }


setup(**compiled_build())
