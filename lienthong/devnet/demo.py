"""``lienthong demo``: a real network on this machine moves a signed document and its receipts.

Four tiers (config/topologies/four-tier.toml): the national node, two provinces, a district
and a commune in each; one mosquitto per node with children (TLS client certificates + ACL);
development certificates. A commune of Quảng Nam sends a signed document with an attachment to
a commune of Khánh Hòa and to Khánh Hòa's People's Committee; the recipients' nodes answer 01
by themselves, and their clerks report 03 (accepted) and 06 (completed). The demo prints the
trace and the receipts, and leaves everything in one folder.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from lienthong.devnet.network import Network, poll_until, topology_text
from lienthong.edxml import build, new_edoc
from lienthong.trace import render, trace

SENDER = "000.01.05.H49"  # UBND xã Duy Sơn (Quảng Nam)
RECIPIENTS = ("000.03.07.H41", "000.00.00.H41")  # UBND xã Diên An, UBND tỉnh Khánh Hòa
CLERK_STATUSES = (("03", "Đã vào sổ văn bản đến"), ("06", "Đã xử lý xong"))
EXPECTED_CODES = ("01", "03", "06")
WAIT_S = 120.0
SETTINGS = {
    "transfer": {"receipt_timeout_s": 10.0, "poll_s": 0.5},
    "daemon": {"drain_grace_s": 5.0},
}


class DemoFailed(Exception):
    """A step of the demo did not happen in time; the message says which."""


def _step(out: TextIO, text: str) -> None:
    print(f"\n== {text}", file=out, flush=True)


def _wait(what: str, check: Callable[[], bool]) -> None:
    if not poll_until(check, WAIT_S):
        raise DemoFailed(f"{what} did not happen within {WAIT_S:g} s")


def _write_document(folder: Path, today: dt.date) -> tuple[Path, str]:
    attachment = (
        "ỦY BAN NHÂN DÂN XÃ DUY SƠN\n"
        "Kính gửi: Ủy ban nhân dân tỉnh Khánh Hòa; Ủy ban nhân dân xã Diên An.\n"
        "Về việc phối hợp trao đổi văn bản điện tử giữa hai địa phương.\n"
    ).encode()
    pkg = new_edoc(
        from_code=SENDER,
        to_codes=list(RECIPIENTS),
        subject="Về việc phối hợp trao đổi văn bản điện tử",
        attachments=[("cong-van-phoi-hop.txt", attachment, "text/plain")],
        today=today,
        number="15",
        notation="UBND-VP",
        place="Duy Sơn",
        from_name="UBND xã Duy Sơn",
    )
    path = folder / "cong-van-15.xml"
    path.write_bytes(build(pkg))
    return path, pkg.document_id


def _receipts_table(net: Network, document_id: str) -> list[str]:
    lines = []
    have = net.receipts(SENDER, document_id)
    for recipient in RECIPIENTS:
        codes = sorted({r.code for r in have if r.level == "status" and r.by == recipient})
        mark = "ok" if set(EXPECTED_CODES) <= set(codes) else "MISSING"
        lines.append(f"  {recipient}: statuses {', '.join(codes) or 'none'}  [{mark}]")
    return lines


def _all_receipts(net: Network, document_id: str) -> bool:
    have = {(r.by, r.code) for r in net.receipts(SENDER, document_id) if r.level == "status"}
    return all((r, c) in have for r in RECIPIENTS for c in EXPECTED_CODES)


def run_demo(root: Path, *, once: bool, out: TextIO) -> int:
    """Run the demo under ``root``; 0 when every expected receipt arrived."""
    _step(out, f"building a four-tier network in {root}")
    net = Network(root, topology_text("four-tier"), overrides=SETTINGS)
    for code, broker in net.brokers.items():
        print(f"  broker of {code}: mqtts://127.0.0.1:{broker.port}", file=out)
    try:
        net.start()
        print(f"  {len(net.nodes)} daemons ready: {', '.join(net.nodes)}", file=out)
        _step(out, f"{SENDER} sends a signed document to {' and '.join(RECIPIENTS)}")
        doc, document_id = _write_document(root, dt.date.today())
        result = net.lienthong(SENDER, "send", str(doc))
        print(result.stdout.rstrip() or result.stderr.rstrip(), file=out)
        if result.returncode != 0:
            raise DemoFailed(f"sending failed: {result.stderr.strip()}")
        _step(out, "waiting for delivery to both recipients")
        for recipient in RECIPIENTS:
            node = net.directory.serving_node(recipient)
            _wait(
                f"delivery to {recipient}",
                lambda node=node, recipient=recipient: any(  # type: ignore[misc]
                    e.document_id == document_id and e.recipient == recipient
                    for e in net.inbox(node)
                ),
            )
            print(f"  delivered to {recipient} (node {node})", file=out)
        _step(out, "the recipients' clerks report 03 and 06")
        for recipient in RECIPIENTS:
            node = net.directory.serving_node(recipient)
            for code, note in CLERK_STATUSES:
                r = net.lienthong(
                    node, "status", document_id, code, "--note", note, "--as", recipient
                )
                print(f"  {r.stdout.strip() or r.stderr.strip()}", file=out)
        _step(out, "waiting for statuses 01, 03 and 06 at the sender")
        ok = poll_until(lambda: _all_receipts(net, document_id), WAIT_S)
        _step(out, "trace (every node's records merged)")
        print(render(document_id, trace(net.views(document_id))), file=out)
        _step(out, f"receipts at the sender {SENDER}")
        print("\n".join(_receipts_table(net, document_id)), file=out)
        if not ok:
            raise DemoFailed("not every expected status reached the sender")
        if not once:
            _step(out, "the network keeps running; press Ctrl-C to stop it")
            configs = {code: node.config_path for code, node in net.nodes.items()}
            print(f"  try: lienthong inbox --config {configs[RECIPIENTS[0]]}", file=out)
            print(f"       lienthong trace '{document_id}' --config {configs[SENDER]}", file=out)
            print(f"       lienthong queue --config {configs['000.00.00.G22']}", file=out)
            _wait_for_interrupt()
        _step(out, f"done: everything is in {root}")
        return 0
    except DemoFailed as exc:
        print(f"\ndemo failed: {exc}\n  daemon logs: {root}/nodes/*/daemon.log", file=out)
        return 1
    finally:
        net.stop()
        net.kill()


def _wait_for_interrupt() -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()
