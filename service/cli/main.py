"""``keyledger`` entry point: one sub-command per module in this package."""

from __future__ import annotations

import argparse
import sys
import traceback
from collections.abc import Sequence
from typing import NoReturn

from service.cli import admin, audit, dev, events, projections, serve
from service.cli.failures import USAGE_EXIT, one_line


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (naming ``--help``) and exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_EXIT, f"keyledger: {message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="keyledger", description="Event-sourced API key lifecycle service.")
    parser.add_argument(
        "--debug", action="store_true", help="on an error, show the traceback, not one line"
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
    except Exception as exc:
        message, code = one_line(exc)
        if args.debug:
            traceback.print_exc()
        print(f"keyledger: {message}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
