"""Sub-commands of the store: ``queue``, ``requeue``, ``journal verify``."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from lienthong import wakeup
from lienthong.config import DEFAULT_CONFIG_PATH, Config, load_config
from lienthong.store.factory import existing_store
from lienthong.store.sqlstore import SqlStore


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this area's sub-commands to ``sub``."""
    queue = sub.add_parser("queue", help="counts of packages and transfers; dead letters")
    queue.add_argument("--dead", action="store_true", help="list dead letters with reasons")
    config_arg(queue)
    queue.set_defaults(func=lambda a: _run(a, _queue))

    requeue = sub.add_parser("requeue", help="put dead transfers or expired packages back")
    which = requeue.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="transfer or package id")
    which.add_argument("--all-dead", action="store_true", help="every dead letter")
    config_arg(requeue)
    requeue.set_defaults(func=lambda a: _run(a, _requeue))

    journal = sub.add_parser("journal", help="the hash-chained journal of state changes")
    journal_sub = journal.add_subparsers(dest="journal_command", required=True)
    verify = journal_sub.add_parser("verify", help="check the chain; exit 1 if broken")
    config_arg(verify)
    verify.set_defaults(func=lambda a: _run(a, _verify))


def config_arg(parser: argparse.ArgumentParser) -> None:
    """Add ``--config FILE``: every command that reads a node's state takes the daemon's file."""
    parser.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG_PATH,
        metavar="FILE",
        help=f"daemon configuration (default {DEFAULT_CONFIG_PATH})",
    )


def configs_arg(parser: argparse.ArgumentParser, merged: str) -> None:
    """Add a repeatable ``--config FILE``: commands that merge the views of several nodes
    (``merged`` says what is merged, for the help text)."""
    parser.add_argument(
        "--config",
        type=Path,
        action="append",
        metavar="FILE",
        help=f"node configuration; repeat to merge {merged} (default {DEFAULT_CONFIG_PATH})",
    )


def load_configs(args: argparse.Namespace) -> list[Config]:
    """The configurations named by a repeatable ``--config``, or the default one."""
    return [load_config(p) for p in args.config or [DEFAULT_CONFIG_PATH]]


def _run(
    args: argparse.Namespace, body: Callable[[SqlStore, argparse.Namespace], Awaitable[int]]
) -> int:
    config = load_config(args.config)
    opened = existing_store(config.node.state_dir, config.store)

    async def main() -> int:
        async with opened as store:
            return await body(store, args)

    return asyncio.run(main())


async def _queue(store: SqlStore, args: argparse.Namespace) -> int:
    now = time.time()
    if args.dead:
        dead = await store.dead_letters()
        for d in dead:
            hop = f" to {d.next_hop}" if d.next_hop else ""
            print(
                f"{d.kind} {d.id}{hop} document {d.document_id} attempts {d.attempts}: {d.reason}"
            )
        print(f"{len(dead)} dead letter(s)")
        return 0
    s = await store.queue_summary(now)
    print("packages:  " + _counts(s.packages))
    print("transfers: " + _counts(s.transfers))
    for hop in sorted(s.per_hop):
        print(f"  to {hop}: {_counts(s.per_hop[hop])}")
    if s.oldest_waiting:
        o = s.oldest_waiting
        print(f"oldest waiting: {o.transfer_id} to {o.next_hop} ({o.state}), {o.age_s:.0f} s")
    print(f"duplicates suppressed: {s.duplicates_suppressed}; conflicts: {s.conflicts}")
    return 0


def _counts(counts: Any) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"


async def _requeue(store: SqlStore, args: argparse.Namespace) -> int:
    count = await store.requeue(None if args.all_dead else args.id, time.time())
    if count:
        wakeup.poke(store.state_dir)  # the running daemon sends them at once
    print(f"requeued {count}")
    return 0


async def _verify(store: SqlStore, args: argparse.Namespace) -> int:
    report = await store.journal_verify()
    if report.ok:
        print(f"journal ok: {report.entries} entries")
        return 0
    print(f"journal BROKEN at entry {report.bad_seq}: {report.problem}")
    return 1
