"""Sub-commands for people at an agency: ``inbox``, ``ack``, ``status``, ``trace``.

They work on the node's store beside the running daemon (SQLite in WAL mode lets both write);
status packages are signed with the node's key and queued for the daemon to send.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from lienthong import receipts
from lienthong.cli.node_cmds import local_processor
from lienthong.cli.store_cmds import config_arg, configs_arg, load_configs
from lienthong.config import Config, load_config
from lienthong.edxml import EdocPackage, build, parse
from lienthong.edxml.model import STATUS_CODES, Organization
from lienthong.errors import LienthongError
from lienthong.logs import configure
from lienthong.processing import SubmissionRefused
from lienthong.store.factory import store_for
from lienthong.store.sqlstore import SqlStore
from lienthong.trace import NodeView, collect_view, format_time, story, trace

OFFICE_STATUS_CODES = ("03", "04", "05", "06", "13", "15", "16")
"""Statuses people report; 01 and 02 are sent by the node itself."""


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this area's sub-commands to ``sub``."""
    inbox = sub.add_parser("inbox", help="documents and status packages delivered here")
    inbox.add_argument("--all", action="store_true", help="also those already retrieved")
    config_arg(inbox)
    inbox.set_defaults(func=lambda a: _with_store(a, _inbox))

    ack = sub.add_parser("ack", help="mark an inbox entry retrieved (or failed, with --fail)")
    ack.add_argument("entry", type=int, metavar="ID", help="the inbox entry number")
    ack.add_argument("--fail", action="store_true", help="retrieval failed: offer it again")
    config_arg(ack)
    ack.set_defaults(func=lambda a: _with_store(a, _ack))

    status = sub.add_parser("status", help="report a processing status back to the sender")
    status.add_argument("document_id", metavar="DOCID")
    status.add_argument(
        "code",
        choices=OFFICE_STATUS_CODES,
        metavar="CODE",
        help=", ".join(f"{c} {STATUS_CODES[c]}" for c in OFFICE_STATUS_CODES),
    )
    status.add_argument("--note", default="", metavar="TEXT", help="the Description")
    status.add_argument(
        "--as",
        dest="reporter",
        metavar="AGENCY",
        help="the recipient agency reporting (default: the document's only recipient served here)",
    )
    config_arg(status)
    status.set_defaults(func=_status)

    tr = sub.add_parser("trace", help="the life of a document: hops, deliveries, statuses")
    tr.add_argument("document_id", metavar="DOCID")
    tr.add_argument("--json", action="store_true", help="one JSON array, for programs")
    configs_arg(tr, "the views of several nodes")
    tr.set_defaults(func=_trace)


def _open(config: Config) -> SqlStore:
    return store_for(config.node.state_dir, config.store)


def _with_store(
    args: argparse.Namespace, body: Callable[[SqlStore, argparse.Namespace], Awaitable[int]]
) -> int:
    config = load_config(args.config)

    async def main() -> int:
        async with _open(config) as store:
            return await body(store, args)

    return asyncio.run(main())


async def _inbox(store: SqlStore, args: argparse.Namespace) -> int:
    entries = await store.inbox_list(pending=not args.all)
    if not entries:
        print("the inbox is empty" if args.all else "nothing waiting in the inbox")
    for e in entries:
        print(
            f"{e.entry_id:>5}  {e.state:<6}  {e.kind:<6}  {format_time(e.added_at)}"
            f"  for {e.recipient}  from {e.sender}  {e.document_id}"
        )
    return 0


async def _ack(store: SqlStore, args: argparse.Namespace) -> int:
    await store.inbox_ack(args.entry, not args.fail, time.time(), "lienthong ack")
    print(f"inbox entry {args.entry}: {'failed, offered again' if args.fail else 'retrieved'}")
    return 0


def _status(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure(json=False, level="warning", stream=sys.stderr)

    async def main() -> int:
        async with local_processor(config) as processor:
            store = processor.store
            entries = [
                e
                for e in await store.inbox_list(pending=False)
                if e.document_id == args.document_id and e.kind == "edoc"
            ]
            if not entries:
                raise LienthongError(f"no document {args.document_id} in this node's inbox")
            reporters = sorted({e.recipient for e in entries})
            reporter = args.reporter or (reporters[0] if len(reporters) == 1 else None)
            if reporter not in reporters:
                raise LienthongError(
                    f"say which recipient reports with --as: one of {', '.join(reporters)}"
                )
            document = parse(await store.read_package(entries[0].package_id))
            if not isinstance(document, EdocPackage):
                raise LienthongError(f"{args.document_id} is not a document package")
            agency = processor.directory.get(reporter)
            status = receipts.status_for(
                document,
                reporter=Organization(reporter, agency.name if agency else reporter),
                code=args.code,
                reasons=[args.note] if args.note else [],
                now=time.time(),
            )
            try:
                await processor.submit(build(status))
            except SubmissionRefused as exc:
                raise LienthongError(str(exc)) from exc
        print(
            f"{args.document_id}: status {args.code} ({STATUS_CODES[args.code]}) from"
            f" {reporter} queued for {document.sender}"
        )
        return 0

    return asyncio.run(main())


async def _view(config: Config, document_id: str) -> NodeView:
    async with _open(config) as store:
        return await collect_view(store, config.node.code, document_id)


def _trace(args: argparse.Namespace) -> int:
    configs = load_configs(args)

    async def main() -> list[NodeView]:
        return [await _view(c, args.document_id) for c in configs]

    views = asyncio.run(main())
    events = trace(views)
    if args.json:
        print(json.dumps([e.as_dict() for e in events], ensure_ascii=False, indent=2))
    else:
        print(story(args.document_id, views))
    return 0 if events else 1
