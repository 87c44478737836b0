"""``keyledger`` entry point: one sub-command per module in this package."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from service.cli import admin, audit, dev, events, projections, serve


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="keyledger", description="Event-sourced API key lifecycle service."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for module in (serve, dev, admin, projections, audit, events):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``keyledger`` command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except KeyboardInterrupt:
        return 130
    except RuntimeError as exc:
        print(f"keyledger: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
