"""Sub-commands of the daemon: ``run``, ``send``, ``demo``, ``keys fingerprint``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from lienthong import eventloop, wakeup
from lienthong.cli.store_cmds import config_arg
from lienthong.config import Config, load_config
from lienthong.keyfiles import read_file
from lienthong.logs import configure
from lienthong.node import Node, load_directory, load_keys
from lienthong.processing import Processor, SubmissionRefused, certificate_fingerprint
from lienthong.store.factory import store_for
from lienthong.trust.keys import load_certificates


def register(sub: argparse._SubParsersAction[Any]) -> None:
    """Add this area's sub-commands to ``sub``."""
    run = sub.add_parser("run", help="run the daemon (systemd Type=notify)")
    config_arg(run)
    run.set_defaults(func=_run)

    send = sub.add_parser("send", help="validate, sign and send packages through this node's store")
    send.add_argument("files", nargs="+", metavar="FILE", help="edXML package(s)")
    config_arg(send)
    send.set_defaults(func=_send)

    demo = sub.add_parser(
        "demo", help="a real four-tier network on this machine moving a signed document"
    )
    demo.add_argument("--once", action="store_true", help="run the flow, stop, exit 0 if OK")
    demo.add_argument("--dir", type=Path, metavar="DIR", help="folder to keep everything in")
    demo.add_argument(
        "--national-cluster",
        action="store_true",
        help="run the national broker as a three-member NATS cluster (nats-server)",
    )
    demo.set_defaults(func=_demo)

    keys = sub.add_parser("keys", help="certificates and keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    fingerprint = keys_sub.add_parser(
        "fingerprint", help="the sha256 fingerprint of a certificate, for the directory"
    )
    fingerprint.add_argument("certs", nargs="+", metavar="CERT")
    fingerprint.set_defaults(func=_fingerprint)


def _run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure(json=True, level=config.daemon.log_level, once=True)

    async def main() -> None:
        node = Node(config)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, node.request_stop)
        await node.run()

    eventloop.run(main())
    return 0


@contextlib.asynccontextmanager
async def local_processor(config: Config) -> AsyncIterator[Processor]:
    """A processor over the node's store, beside the running daemon (which sends what it
    queues): for commands that submit packages as the node. Loads the directory and keys."""
    directory = load_directory(config)
    identity, trust = load_keys(config)
    async with store_for(config.node.state_dir, config.store) as store:
        yield Processor(
            me=config.node.code,
            directory=directory,
            identity=identity,
            trust=trust,
            store=store,
            max_package_bytes=config.transfer.max_package_bytes,
            max_age_s=config.store.package_max_age_s,
            strict=config.validation.strict,
            # The daemon sends what this queues: told at once, it need not wait for its poll.
            on_enqueued=wakeup.poker(config.node.state_dir),
        )


def _send(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    configure(json=False, level="warning", stream=sys.stderr)
    datas = [(path, read_file(path, "package")) for path in args.files]

    async def main() -> int:
        status = 0
        async with local_processor(config) as processor:
            for path, data in datas:
                try:
                    done = await processor.submit(data)
                except SubmissionRefused as exc:
                    status = 1
                    print(f"{path}: refused", file=sys.stderr)
                    for problem in exc.problems:
                        print(f"  {problem}", file=sys.stderr)
                    continue
                where = [f"{hop} ({', '.join(rs)})" for hop, rs in done.hops.items()]
                where += [f"{code} (here)" for code in done.local]
                what = "already sent" if done.duplicate else "queued"
                print(
                    f"{path}: {done.document_id}: {what}"
                    + (f" -> {'; '.join(where)}" if where else "")
                )
        return status

    return asyncio.run(main())


def _fingerprint(args: argparse.Namespace) -> int:
    for path in args.certs:
        for cert in load_certificates(read_file(path, "certificate")):
            print(f"{certificate_fingerprint(cert)}  {cert.subject.rfc4514_string()}  {path}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from lienthong.devnet.demo import run_demo  # the demo's imports are not needed elsewhere

    root = args.dir or Path(tempfile.mkdtemp(prefix="lienthong-demo-"))
    return run_demo(
        root.resolve(), once=args.once, out=sys.stdout, national_cluster=args.national_cluster
    )
