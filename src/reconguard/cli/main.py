"""Root parser of the ``reconguard`` command.

Each sub-command module exposes ``add_parser(subparsers)``, which creates its parser and sets
``func`` (``args -> int`` exit code) as a default. A :class:`~reconguard.errors.ReconguardError`
raised anywhere becomes one line on stderr and exit code 2 -- never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from typing import Sequence

from reconguard import __version__
from reconguard.cli.options import OneLineParser
from reconguard.errors import ReconguardError

SUBCOMMANDS = ("data", "train", "evaluate", "attack", "transfer", "defend", "audit", "report", "demo", "reproduce")


def build_parser() -> argparse.ArgumentParser:
    """Create the root parser with every sub-command registered."""
    parser = OneLineParser(
        prog="reconguard",
        description=(
            "Stress-test and harden deep-learning MRI reconstruction: build data, train "
            "reconstructors, attack them, defend them and report."
        ),
        epilog="Run 'reconguard COMMAND --help' for the options of each command.",
    )
    parser.add_argument("--version", action="version", version=f"reconguard {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"reconguard.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``reconguard`` console script.

    Args:
        argv: Arguments (default: ``sys.argv[1:]``).

    Returns:
        Process exit code: 0 on success, 2 on bad input, 130 on interruption.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # a usage error has printed its one line; --help and --version exit 0
        if exit_.code in (0, None):
            raise
        return int(exit_.code) if isinstance(exit_.code, int) else 2
    try:
        with warnings.catch_warnings():
            _one_line_warnings(f"reconguard {args.command}")
            return int(args.func(args) or 0)
    except ReconguardError as err:
        print(f"reconguard {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"reconguard {args.command}: interrupted", file=sys.stderr)
        return 130


def _one_line_warnings(prog: str) -> None:
    """Show reconguard's own warnings (untrained model, network filesystem...) as one line each."""
    default = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 (warnings API)
        if category.__module__.startswith("reconguard."):
            print(f"{prog}: warning: {message}", file=sys.stderr if file is None else file)
        else:
            default(message, category, filename, lineno, file, line)

    warnings.showwarning = show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
