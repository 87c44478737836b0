"""A copy of the sources with the hot paths compiled (setup.py, mypyc).

``python -m bench.verify --compiled`` serves from such a copy, and
``tests/integration/test_compiled_hot_path.py`` runs the verification tests in
one. The working tree is never compiled in place: a compiled module is found
before its source, so an edit to the source would not run until it was built
again.

    python -m bench.compiled_tree DIR     # build one in DIR, to look at or run from
    PYTHONPATH=DIR keyledger serve        # run from it (from any folder but this checkout)

It needs mypy, which the dev extras install (``pip install -e '.[dev]'``).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What a compiled copy holds: the packages, what builds them, and what runs them.
_COPIED = (
    "setup.py",
    "pyproject.toml",
    "README.md",
    "events",
    "keyledger_client",
    "service",
    "projections",
    "bench",
    "tests",
)
_SKIPPED = shutil.ignore_patterns("__pycache__", "*.so", ".keyledger", "build")


def compiled_modules() -> list[str]:
    """The dotted names of the modules setup.py compiles (its ``COMPILED``)."""
    # Read from setup.py's syntax tree: running it would run setup().
    for node in ast.parse((ROOT / "setup.py").read_text()).body:
        if isinstance(node, ast.Assign) and ast.unparse(node.targets[0]) == "COMPILED":
            paths = ast.literal_eval(node.value)
            return [str(path).removesuffix(".py").replace("/", ".") for path in paths]
    raise RuntimeError("setup.py has no COMPILED list")


def build(destination: Path) -> Path:
    """Copy the sources to ``destination`` and compile the hot paths there; returns it.

    Raises ``RuntimeError`` with the compiler's output when the build fails.
    """
    if importlib.util.find_spec("mypyc") is None:
        raise RuntimeError("a compiled build needs mypy (pip install -e '.[dev]')")
    destination.mkdir(parents=True, exist_ok=True)
    for name in _COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, destination / name, ignore=_SKIPPED, dirs_exist_ok=True)
        else:
            shutil.copy2(source, destination / name)
    environment = {**os.environ, "KEYLEDGER_COMPILE": "1"}
    environment.pop("PYTHONPATH", None)  # the copy's sources, not the working tree's
    built = subprocess.run(
        [sys.executable, "setup.py", "build_ext", "--inplace", "-j", str(os.cpu_count() or 1)],
        cwd=destination,
        env=environment,
        capture_output=True,
        text=True,
        check=False,
    )
    if built.returncode != 0:
        raise RuntimeError(
            f"the compiled build failed:\n{built.stdout[-4000:]}{built.stderr[-4000:]}"
        )
    missing = sorted(set(compiled_modules()) - set(compiled_in(destination)))
    if missing:
        raise RuntimeError(f"the compiled build left these interpreted: {', '.join(missing)}")
    return destination


def compiled_in(tree: Path) -> list[str]:
    """The modules of ``compiled_modules`` that ``tree`` holds compiled (all, after ``build``)."""
    found = []
    for module in compiled_modules():
        folder = tree.joinpath(*module.split(".")[:-1])
        stem = module.rsplit(".", 1)[-1]
        if any(folder.glob(f"{stem}.*.so")):
            found.append(module)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("destination", type=Path)
    args = parser.parse_args()
    tree = build(args.destination)
    print(f"compiled in {tree}: {', '.join(compiled_in(tree))}")


if __name__ == "__main__":
    main()
