"""The ``lienthong`` command: one sub-command module per area, registered here.

Each module in ``COMMAND_MODULES`` exposes ``register(subparsers)``, which adds its
sub-commands and sets ``func`` on each: a callable taking the parsed namespace and returning
the exit status. Errors the project raises on purpose are printed as one line on stderr
(exit 2 for configuration and usage errors, 1 otherwise); anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from lienthong import __version__
from lienthong.errors import ConfigError, LienthongError

COMMAND_MODULES = (
    "lienthong.cli.format_cmds",
    "lienthong.cli.trust_cmds",
    "lienthong.cli.store_cmds",
    "lienthong.cli.node_cmds",
    "lienthong.cli.office_cmds",
    "lienthong.cli.report_cmds",
    "lienthong.cli.directory_cmds",
    "lienthong.cli.setup_cmds",
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every sub-command registered."""
    parser = argparse.ArgumentParser(
        prog="lienthong",
        description="Document interchange between state agencies (edXML, QCVN 102:2016).",
    )
    parser.add_argument("--version", action="version", version=f"lienthong {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.func(args)
    except ConfigError as exc:
        print(f"lienthong: configuration error: {exc}", file=sys.stderr)
        return 2
    except LienthongError as exc:
        print(f"lienthong: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 1
    return status


if __name__ == "__main__":
    sys.exit(main())
