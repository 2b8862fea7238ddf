"""``lienthong demo``: a real network on this machine moves a signed document and its receipts.

Four tiers (config/topologies/four-tier.toml): the national node, two provinces, a district
and a commune in each; one mosquitto per node with children (TLS client certificates + ACL);
development certificates. The office software of a commune of Quảng Nam sends a document with
an attachment through its node's API (the axis SDK's wire format) to a commune of Khánh Hòa
and to Khánh Hòa's People's Committee; their nodes answer 01 by themselves, and their office
software retrieves it and reports 03 (accepted) and 06 (completed) the same way. The demo prints the
trace and the receipts, and leaves everything in one folder.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from lienthong import receipts
from lienthong.devnet.network import Network, poll_until, topology_text
from lienthong.edxml import EdocPackage, build, new_edoc, parse
from lienthong.edxml.model import Organization
from lienthong.trace import story

SENDER = "000.01.05.H49"  # UBND xã Duy Sơn (Quảng Nam)
RECIPIENTS = ("000.03.07.H41", "000.00.00.H41")  # UBND xã Diên An, UBND tỉnh Khánh Hòa
CLERK_STATUSES = (("03", "Đã vào sổ văn bản đến"), ("06", "Đã xử lý xong"))
EXPECTED_CODES = ("01", "03", "06")
WAIT_S = 120.0
NEW_AGENCY = ("000.00.02.H41", "Sở Tài chính tỉnh Khánh Hòa")
"""The department directory version 1 adds, under Khánh Hòa's province node."""
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


async def _office_send(net: Network, package: bytes) -> str:
    """The sender's office software calls sendEdoc; the DocId the node gives back."""
    reply = await net.office(SENDER).send_edoc(
        {"from": SENDER, "servicetype": "eDoc", "messagetype": "edoc", "to": list(RECIPIENTS)},
        package,
    )
    if reply is None or not reply.ok:
        raise DemoFailed(f"sendEdoc was refused: {reply.desc if reply else 'no reply'}")
    return str(reply.json["DocId"])


async def _office_receive(net: Network, recipient: str, document_id: str) -> list[str]:
    """A recipient's office software: list, fetch, acknowledge, then report 03 and 06."""
    office = net.office(net.directory.serving_node(recipient))
    listed = await office.get_received_edoc_list({"servicetype": "eDoc", "messagetype": "edoc"})
    entries = [e for e in listed.json["data"] if e["to"] == recipient]
    if not entries:
        raise DemoFailed(f"getReceivedEdocList at {recipient} does not offer the document")
    doc_id = str(entries[0]["docId"])
    fetched = await office.get_edoc({"docId": doc_id})
    document = parse(office.edoc_of(fetched))
    if not isinstance(document, EdocPackage) or document.document_id != document_id:
        raise DemoFailed(f"getEdoc at {recipient} returned another package")
    await office.update_status({"docid": doc_id, "status": "done"})
    lines = [
        f"{recipient}: getReceivedEdocList -> docId {doc_id}; getEdoc -> "
        f"{len(document.attachments)} attachment(s), signed: {document.signed}; updateStatus done"
    ]
    agency = net.directory.get(recipient)
    for code, note in CLERK_STATUSES:
        status = receipts.status_for(
            document,
            reporter=Organization(recipient, agency.name if agency else recipient),
            code=code,
            reasons=[note],
            now=time.time(),
        )
        reply = await office.send_edoc(
            {"from": recipient, "servicetype": "eDoc", "messagetype": "status"}, build(status)
        )
        if reply is None or not reply.ok:
            raise DemoFailed(f"status {code} from {recipient} refused: {reply and reply.desc}")
        lines.append(f"{recipient}: sendEdoc status {code} ({note})")
    return lines


async def _office_sent_list(net: Network, doc_id: str) -> list[str]:
    """What the sender's office software sees with getSentEdocList."""
    reply = await net.office(SENDER).get_sent_edoc_list(
        {"servicetype": "eDoc", "messagetype": "edoc", "docId": doc_id}
    )
    return [
        f"getSentEdocList: {row['toCode']}: {row['receiveStatus']} {row['receiveStatusDesc']}"
        for row in reply.json["data"]
    ]


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


async def _agencies_seen(net: Network, code: str) -> set[str]:
    """The agency codes getAgenciesList gives ``code``'s office software."""
    reply = await net.office(code).get_agencies_list()
    return {str(row["id"]) for row in reply.json["data"]}


def _directory_update(net: Network, out: TextIO) -> None:
    """The national node publishes version 1 of the directory; every node applies it."""
    national = net.directory.national
    _step(out, f"the directory authority publishes version 1 at the national node {national}")
    code, name = NEW_AGENCY
    source = net.root / "directory-v1.toml"
    source.write_text(
        topology_text("four-tier") + f'\n[[agency]]\ncode = "{code}"\nname = "{name}"\n',
        encoding="utf-8",
    )
    print(f"  + {code} {name}, under the province 000.00.00.H41", file=out)
    for line in net.publish_directory(
        source, 1, "--config", str(net.nodes[national].config_path)
    ).splitlines():
        print(f"  {line}", file=out)
    _wait("directory version 1 at every node", lambda: all(
        net.directory_version(node) == 1 for node in net.nodes))  # fmt: skip
    print(f"  applied by all {len(net.nodes)} nodes, passed down the tree by the nodes", file=out)
    seen = asyncio.run(_agencies_seen(net, SENDER))
    print(f"  getAgenciesList at {SENDER} now lists {code}: {code in seen}", file=out)
    if code not in seen:
        raise DemoFailed(f"getAgenciesList at {SENDER} does not list {code}")


def run_demo(root: Path, *, once: bool, out: TextIO, national_cluster: bool = False) -> int:
    """Run the demo under ``root``; 0 when every expected receipt arrived. With
    ``national_cluster`` the national node's broker is a three-member NATS cluster."""
    _step(out, f"building a four-tier network in {root}")
    net = Network(
        root, topology_text("four-tier"), overrides=SETTINGS, national_cluster=national_cluster
    )
    for code, broker in net.brokers.items():
        where = ", ".join(f"mqtts://{address}" for address in broker.addresses)
        print(f"  broker of {code} ({broker.engine}): {where}", file=out)
    try:
        net.start()
        print(f"  {len(net.nodes)} daemons ready: {', '.join(net.nodes)}", file=out)
        _step(out, f"{SENDER}'s office software sends a document through its node's API")
        doc, document_id = _write_document(root, dt.date.today())
        doc_id = asyncio.run(_office_send(net, doc.read_bytes()))
        print(f"  sendEdoc: accepted, DocId {doc_id[:16]}...; DocumentId {document_id}", file=out)
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
            print(f"  delivered to {recipient} (node {node}); status 01 sent back", file=out)
        _step(out, "the recipients' office software retrieves it and reports 03 and 06")
        for recipient in RECIPIENTS:
            for line in asyncio.run(_office_receive(net, recipient, document_id)):
                print(f"  {line}", file=out)
        _step(out, "waiting for statuses 01, 03 and 06 at the sender")
        ok = poll_until(lambda: _all_receipts(net, document_id), WAIT_S)
        _step(out, "trace (every node's records merged)")
        print(story(document_id, net.views(document_id)), file=out)
        _step(out, f"receipts at the sender {SENDER}")
        print("\n".join(_receipts_table(net, document_id)), file=out)
        for line in asyncio.run(_office_sent_list(net, doc_id)):
            print(f"  {line}", file=out)
        if not ok:
            raise DemoFailed("not every expected status reached the sender")
        _directory_update(net, out)
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
