"""Sub-command ``report``: the figures of a period per agency, as CSV or an HTML page.

Reads the stores of one or more nodes (``--config`` repeated: the nodes of one server or
province, merged), beside their running daemons. The page's module loads matplotlib, so it is
imported only when a page is asked for.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lienthong.cli.store_cmds import configs_arg, load_configs
from lienthong.config import Config
from lienthong.errors import LienthongError
from lienthong.node import load_directory
from lienthong.report import NodeRecords, Period, compute, read_node, served_by, to_csv
from lienthong.report.groups import Place, places
from lienthong.store.factory import existing_store


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add ``report`` to ``sub``."""
    report = sub.add_parser(
        "report",
        help="documents sent and received per agency over a period (CSV or HTML)",
        description="Per agency: documents sent and received, share signed and verified, "
        "median and 95th percentile time to status 01, share confirmed the same day, "
        "refusals by reason. Days are Vietnam local days, both ends included.",
    )
    report.add_argument(
        "--from",
        dest="first",
        required=True,
        type=day,
        metavar="DATE",
        help="first day, yyyy-mm-dd",
    )
    report.add_argument(
        "--to", dest="last", required=True, type=day, metavar="DATE", help="last day, yyyy-mm-dd"
    )
    report.add_argument(
        "--format", choices=("csv", "html"), default="csv", help="csv (default) or html"
    )
    report.add_argument(
        "-o",
        "--output",
        type=Path,
        metavar="FILE",
        help="write here instead of standard output (CSV files start with a UTF-8 byte-order"
        " mark so spreadsheets read Vietnamese names right)",
    )
    configs_arg(report, "the nodes of one server or province")
    report.set_defaults(func=_report)


def day(text: str) -> dt.date:
    """A ``yyyy-mm-dd`` date from the command line."""
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (yyyy-mm-dd): {text!r}") from None


async def _read(config: Config, served: Sequence[str], period: Period) -> NodeRecords:
    async with existing_store(config.node.state_dir, config.store) as store:
        return await read_node(store, config.node.code, served, period)


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole or not at all."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        partial.write_bytes(data)
        os.replace(partial, path)
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise LienthongError(f"cannot write {path}: {exc.strerror}") from exc


def _report(args: argparse.Namespace) -> int:
    period = Period(args.first, args.last)
    configs = load_configs(args)
    names: dict[str, str] = {}
    sources: list[tuple[Config, tuple[str, ...]]] = []
    placed: dict[str, Place] = {}
    for config in configs:
        directory = load_directory(config)
        names |= {c: directory.agency(c).name for c in directory.codes if c not in names}
        sources.append((config, served_by(directory, config.node.code)))
        placed |= places(directory, (c for c in sources[-1][1] if c not in placed))

    async def main() -> list[NodeRecords]:
        return [await _read(config, served, period) for config, served in sources]

    report = compute(period, asyncio.run(main()), names)
    if args.format == "html":
        from lienthong.report.page import to_html  # here: it loads matplotlib

        text = to_html(report, names, time.time(), placed)
    else:
        text = to_csv(report)
    if args.output is None:
        sys.stdout.write(text)
    else:
        bom = "\ufeff" if args.format == "csv" else ""
        _write(args.output, (bom + text).encode("utf-8"))
    return 0
