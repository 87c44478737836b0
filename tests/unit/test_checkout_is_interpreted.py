"""The checkout runs its sources: no compiled module beside them.

A compiled module (``KEYLEDGER_COMPILE=1``, setup.py) is imported before the
source of the same name, so one left in the checkout would run instead of
the source as edited, in ``keyledger dev`` and in these tests alike. setup.py
refuses an editable compiled install; this catches one built in place by hand.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_checkout_holds_no_compiled_module() -> None:
    found = [
        str(path.relative_to(ROOT))
        for package in ("service", "events", "projections", "keyledger_client")
        for path in (ROOT / package).rglob("*.so")
    ]
    found += [path.name for path in ROOT.glob("*__mypyc*.so")]
    assert found == [], f"compiled modules in the checkout (delete them): {found}"
