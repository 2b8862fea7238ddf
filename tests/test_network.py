"""A real network: one mosquitto per tier (TLS + ACL), one `lienthong run` process per node.

The four-tier topology of config/topologies/four-tier.toml: the national node, two provinces
(H49, H41), a district and a commune under each, and a department served by its province's
node. Packages are submitted with `lienthong send` at a node and followed through the stores.
Waits are bounded polls of the nodes' stores, never timed assertions.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lienthong.devnet.network import Network, poll_until
from lienthong.edxml import build, new_edoc, parse
from lienthong.keyfiles import load_identity
from lienthong.store.model import InboxEntry, Receipt
from lienthong.transport.frames import encode_frame, inbox_topic, split_into_frames
from lienthong.trust import sign_package

TOPOLOGY = Path(__file__).resolve().parents[1] / "config" / "topologies" / "four-tier.toml"
NATIONAL = "000.00.00.G22"
PROVINCE_A, DISTRICT_A, COMMUNE_A = "000.00.00.H49", "000.00.05.H49", "000.01.05.H49"
DEPARTMENT_A = "000.00.01.H49"  # served by the province's node
PROVINCE_B, DISTRICT_B, COMMUNE_B = "000.00.00.H41", "000.00.07.H41", "000.03.07.H41"
PATH_A_TO_B = [COMMUNE_A, DISTRICT_A, PROVINCE_A, NATIONAL, PROVINCE_B, DISTRICT_B, COMMUNE_B]
WAIT_S = 60.0
FAST = {
    "transfer": {"receipt_timeout_s": 3.0, "poll_s": 0.3},
    "store": {"lease_s": 8.0},
    "store.retry": {"base_delay_s": 0.5, "max_delay_s": 3.0},
    "daemon": {"drain_grace_s": 3.0},
}


def _network(root: Path) -> Network:
    return Network(root, TOPOLOGY.read_text(encoding="utf-8"), overrides=FAST)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """The seven-node network, started once for this module's tests that do not break it."""
    network = _network(tmp_path_factory.mktemp("net"))
    try:
        network.start()
        yield network
    finally:
        network.stop()
        network.kill()


def inbox(net: Network, code: str) -> list[InboxEntry]:
    """Every inbox entry at ``code``'s node (retrieved or not)."""
    return net.inbox(code)


def receipts(net: Network, code: str, document_id: str) -> list[Receipt]:
    """Every receipt ``code``'s node holds about ``document_id``."""
    return net.receipts(code, document_id)


def wait_for(what: str, check: Callable[[], bool], net: Network) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` (with the daemons' warnings)."""
    if poll_until(check, WAIT_S):
        return
    warnings = [
        f"{code}: {line}"
        for code, node in net.nodes.items()
        for line in node.log().splitlines()
        if '"warning"' in line or '"error"' in line
    ]
    last = [f"{code}: {(node.log().splitlines() or [''])[-1]}" for code, node in net.nodes.items()]
    pytest.fail(
        f"timed out waiting for {what}; daemon warnings:\n"
        + "\n".join(warnings[-30:])
        + "\nlast line of each daemon:\n"
        + "\n".join(last)
    )


def write_document(
    tmp: Path, sender: str, recipients: list[str], subject: str, number: str
) -> Path:
    """An unsigned edoc with one attachment, written to a file."""
    pkg = new_edoc(
        from_code=sender,
        to_codes=recipients,
        subject=subject,
        attachments=[("cong-van.txt", f"Nội dung {subject}".encode(), "text/plain")],
        today=dt.date.today(),
        number=number,
        notation="UBND-VP",
    )
    path = tmp / f"{number}.xml"
    path.write_bytes(build(pkg))
    return path


def write_batch(tmp: Path, sender: str, to: str, number: int, count: int) -> list[Path]:
    """``count`` documents from ``sender`` to ``to``, numbered ``<number><i:02d>``."""
    return [
        write_document(tmp, sender, [to], f"Lô {number} số {i}", f"{number}{i:02d}")
        for i in range(count)
    ]


def send(net: Network, code: str, *files: Path) -> str:
    """``lienthong send`` at ``code``'s node; its standard output."""
    result = net.lienthong(code, "send", *map(str, files))
    assert result.returncode == 0, result.stderr
    return result.stdout


def document_ids(entries: list[InboxEntry], kind: str = "edoc") -> list[str]:
    """The DocumentIds of the inbox entries of ``kind``."""
    return sorted(e.document_id for e in entries if e.kind == kind)


def test_commune_to_commune_across_provinces_with_trace_and_status(
    net: Network, tmp_path: Path
) -> None:
    """A commune's document reaches a commune of another province through six hops; every node
    on the way records the hop receipt, and status 01 comes back to the sender signed."""
    doc = write_document(tmp_path, COMMUNE_A, [COMMUNE_B], "Liên thông qua sáu chặng", "101")
    send(net, COMMUNE_A, doc)
    document_id = f"{COMMUNE_A},{time.strftime('%Y/%m/%d')},101/UBND-VP"
    wait_for(
        "the document in the far commune's inbox",
        lambda: document_id in document_ids(inbox(net, COMMUNE_B)),
        net,
    )
    wait_for(
        "status 01 at the sender",
        lambda: any(
            r.level == "status" and r.code == "01" and r.by == COMMUNE_B
            for r in receipts(net, COMMUNE_A, document_id)
        ),
        net,
    )
    # Each node but the last sent the package on and holds the next node's hop receipt (the
    # status 01 coming back adds the hops of the way back under the same DocumentId).
    for here, nxt in itertools.pairwise(PATH_A_TO_B):
        hops = [r.by for r in receipts(net, here, document_id) if r.level == "hop"]
        assert nxt in hops, f"{here}: {hops}"
    assert document_ids(inbox(net, COMMUNE_B)).count(document_id) == 1


def test_fan_out_reaches_each_recipient_exactly_once(net: Network, tmp_path: Path) -> None:
    """One package to recipients at four tiers in two provinces: each inbox gets one copy,
    the served department's copy lands at its province's node, and every recipient answers 01."""
    recipients = [PROVINCE_B, COMMUNE_B, DEPARTMENT_A, DISTRICT_A]
    doc = write_document(tmp_path, COMMUNE_A, recipients, "Gửi nhiều nơi", "202")
    send(net, COMMUNE_A, doc)
    document_id = f"{COMMUNE_A},{time.strftime('%Y/%m/%d')},202/UBND-VP"
    holders = {PROVINCE_B: PROVINCE_B, COMMUNE_B: COMMUNE_B, DEPARTMENT_A: PROVINCE_A}
    holders[DISTRICT_A] = DISTRICT_A
    for recipient, node in holders.items():
        wait_for(
            f"{recipient}'s copy at node {node}",
            lambda node=node, recipient=recipient: any(
                e.document_id == document_id and e.recipient == recipient for e in inbox(net, node)
            ),
            net,
        )
    wait_for(
        "four status 01 at the sender",
        lambda: (
            {r.by for r in receipts(net, COMMUNE_A, document_id) if r.code == "01"}
            == set(recipients)
        ),
        net,
    )
    for code in net.nodes:
        copies = [e for e in inbox(net, code) if e.document_id == document_id and e.kind == "edoc"]
        expected = [r for r, n in holders.items() if n == code]
        assert sorted(e.recipient for e in copies) == sorted(expected), code


def test_wrong_signer_is_quarantined_and_answered_with_status_02(
    net: Network, tmp_path: Path
) -> None:
    """A package signed with another agency's certificate is refused at the destination, kept
    in quarantine, and a status 02 naming the reason reaches the sender."""
    doc = write_document(tmp_path, COMMUNE_A, [DISTRICT_A], "Ký sai", "303")
    cert, key = net.pki.client_files(PROVINCE_B)
    forged = sign_package(doc.read_bytes(), load_identity(key, cert))
    doc.write_bytes(forged)
    send(net, COMMUNE_A, doc)
    document_id = f"{COMMUNE_A},{time.strftime('%Y/%m/%d')},303/UBND-VP"

    def refused() -> list[Receipt]:
        return [r for r in receipts(net, COMMUNE_A, document_id) if r.code == "02"]

    wait_for("status 02 at the sender", lambda: bool(refused()), net)
    assert refused()[0].by == DISTRICT_A
    assert PROVINCE_B in refused()[0].detail
    assert document_id not in document_ids(inbox(net, DISTRICT_A))
    (view,) = [v for v in net.views(document_id) if v.node == DISTRICT_A]
    assert [p.state for p in view.packages if p.meta.kind == "edoc"] == ["quarantined"]


def test_unknown_recipient_is_refused_at_submission(net: Network, tmp_path: Path) -> None:
    """`lienthong send` refuses a package for an agency the directory does not know, saying
    which, and sends nothing."""
    doc = write_document(tmp_path, COMMUNE_A, ["000.00.09.H49"], "Không rõ nơi nhận", "404")
    result = net.lienthong(COMMUNE_A, "send", str(doc))
    assert result.returncode == 1
    assert "recipient 000.00.09.H49" in result.stderr


def test_sigterm_drains_and_exits_cleanly(tmp_path: Path) -> None:
    """Under a systemd watchdog the daemon pings WATCHDOG=1; SIGTERM makes it announce
    STOPPING=1 and exit with status 0."""
    network = _network(tmp_path / "net")
    try:
        for broker in network.brokers.values():
            broker.start()
        node = network.nodes[NATIONAL]
        node.start(env={"WATCHDOG_USEC": "200000"})
        node.wait_ready()
        wait_for("a watchdog ping", lambda: "WATCHDOG=1" in node.notifications(), network)
        assert node.stop() == 0
        assert any(m.startswith("STOPPING=1") for m in node.notifications()), node.notifications()
        assert '"event": "node_stopped"' in node.log()
    finally:
        network.kill()


def test_bad_config_names_the_key(tmp_path: Path) -> None:
    """`lienthong run` with a config missing the key path exits 2 naming identity.key."""
    config = tmp_path / "node.toml"
    config.write_text(
        '[node]\ncode = "000.00.00.H49"\ndirectory = "d.toml"\n[trust]\nca = ["ca.pem"]\n'
        '[links.parent]\nhost = "127.0.0.1"\ncafile = "ca.pem"\n',
        encoding="utf-8",
    )
    result = subprocess.run(
        [sys.executable, "-m", "lienthong", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert "identity.key: is required to run the daemon" in result.stderr


@pytest.mark.slow
def test_broker_and_node_killed_mid_stream_lose_and_duplicate_nothing(tmp_path: Path) -> None:
    """The national broker SIGKILLed and restarted, then a transit province's daemon SIGKILLed
    and restarted, while 30 documents cross the country: each arrives exactly once, and each
    sender gets its status 01."""
    network = _network(tmp_path / "net")
    docs = tmp_path / "docs"
    docs.mkdir()
    batches = [
        [
            write_document(docs, COMMUNE_A, [COMMUNE_B], f"Lô {b} số {i}", f"{b}{i:02d}")
            for i in range(10)
        ]
        for b in (5, 6, 7)
    ]
    try:
        network.start()
        send(network, COMMUNE_A, *batches[0])
        network.brokers[NATIONAL].kill()
        send(network, COMMUNE_A, *batches[1])
        network.brokers[NATIONAL].start()
        network.nodes[PROVINCE_B].kill()
        send(network, COMMUNE_A, *batches[2])
        network.nodes[PROVINCE_B].start()
        network.nodes[PROVINCE_B].wait_ready()
        today = time.strftime("%Y/%m/%d")
        expected = sorted(
            f"{COMMUNE_A},{today},{doc.stem}/UBND-VP" for batch in batches for doc in batch
        )
        wait_for(
            "all 30 documents in the far commune's inbox",
            lambda: sorted(set(document_ids(inbox(network, COMMUNE_B)))) == expected,
            network,
        )
        wait_for(
            "30 status 01 at the sender",
            lambda: sorted(set(document_ids(inbox(network, COMMUNE_A), kind="status"))) == expected,
            network,
        )
        # The faults were felt: the province lost its national link, and came back.
        assert '"link_down"' in network.nodes[PROVINCE_A].log()
        delivered = document_ids(inbox(network, COMMUNE_B))
        print(f"sent 30, delivered {len(delivered)}, distinct {len(set(delivered))}")
        assert delivered == expected  # one copy each: nothing lost, nothing twice
    finally:
        network.stop()
        network.kill()


def test_peer_link_skips_the_national_node_and_large_packages_travel_in_chunks(
    tmp_path: Path,
) -> None:
    """With a peer link between the two provinces, a 3 MB document (frames of under 1 MiB)
    goes province to province over the national broker without passing the national node."""
    text = TOPOLOGY.read_text(encoding="utf-8").replace(
        '# [[peer]]\n# nodes = ["000.00.00.H49", "000.00.00.H41"]',
        '[[peer]]\nnodes = ["000.00.00.H49", "000.00.00.H41"]',
    )
    assert "\n[[peer]]" in text
    network = Network(tmp_path / "net", text, overrides=FAST)
    pkg = new_edoc(
        from_code=COMMUNE_A,
        to_codes=[COMMUNE_B],
        subject="Tài liệu lớn",
        attachments=[("ban-do.bin", bytes(range(256)) * 12_000, "application/octet-stream")],
        today=dt.date.today(),
        number="909",
        notation="UBND-VP",
    )
    doc = tmp_path / "large.xml"
    doc.write_bytes(build(pkg))
    assert doc.stat().st_size > 3 * 1024 * 1024
    try:
        network.start()
        send(network, COMMUNE_A, doc)
        wait_for(
            "the large document at the far commune",
            lambda: pkg.document_id in document_ids(inbox(network, COMMUNE_B)),
            network,
        )
        hops_at_a = [r.by for r in receipts(network, PROVINCE_A, pkg.document_id)]
        assert PROVINCE_B in hops_at_a
        assert receipts(network, NATIONAL, pkg.document_id) == []
    finally:
        network.stop()
        network.kill()


def test_demo_once_moves_a_document_and_prints_its_receipts(tmp_path: Path) -> None:
    """`lienthong demo --once` exits 0 after both recipients' 01, 03 and 06 reach the sender,
    and prints the trace and the receipts."""
    result = subprocess.run(
        [sys.executable, "-m", "lienthong", "demo", "--once", "--dir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "000.03.07.H41: statuses 01, 03, 06  [ok]" in result.stdout
    assert "000.00.00.H41: statuses 01, 03, 06  [ok]" in result.stdout
    assert "delivered to the inbox of 000.03.07.H41" in result.stdout
    assert (tmp_path / "demo" / "nodes" / "000.00.00.G22" / "daemon.log").exists()


def test_inbox_ack_and_status_commands(net: Network, tmp_path: Path) -> None:
    """A clerk lists the inbox, acknowledges an entry (twice is harmless), and reports 03,
    which reaches the sender."""
    doc = write_document(tmp_path, COMMUNE_A, [DISTRICT_B], "Cho văn thư", "505")
    send(net, COMMUNE_A, doc)
    document_id = f"{COMMUNE_A},{time.strftime('%Y/%m/%d')},505/UBND-VP"
    wait_for("delivery", lambda: document_id in document_ids(inbox(net, DISTRICT_B)), net)
    listed = net.lienthong(DISTRICT_B, "inbox")
    assert document_id in listed.stdout
    (entry,) = [e for e in inbox(net, DISTRICT_B) if e.document_id == document_id]
    for _ in range(2):
        assert net.lienthong(DISTRICT_B, "ack", str(entry.entry_id)).returncode == 0
    assert document_id not in net.lienthong(DISTRICT_B, "inbox").stdout
    reported = net.lienthong(DISTRICT_B, "status", document_id, "03", "--note", "Đã vào sổ")
    assert reported.returncode == 0, reported.stderr
    wait_for(
        "status 03 at the sender",
        lambda: any(r.code == "03" for r in receipts(net, COMMUNE_A, document_id)),
        net,
    )


def test_spool_folders_carry_a_document_across_the_network(tmp_path: Path) -> None:
    """A package dropped in the sender node's outbox/ reaches the recipient node's inbox/ folder
    with its attachment extracted, and the sender's status/ folder gets the status 01."""
    overrides = {**FAST, "spool": {"dir": "spool", "settle_s": 0.5, "poll_s": 0.2}}
    network = Network(tmp_path / "net", TOPOLOGY.read_text(encoding="utf-8"), overrides=overrides)
    spool_of = {code: node.workdir / "spool" for code, node in network.nodes.items()}
    try:
        network.start()
        doc = write_document(tmp_path, COMMUNE_A, [DISTRICT_B], "Qua thư mục", "606")
        (spool_of[COMMUNE_A] / "outbox" / ".partial.xml").write_bytes(doc.read_bytes())
        (spool_of[COMMUNE_A] / "outbox" / ".partial.xml").rename(
            spool_of[COMMUNE_A] / "outbox" / "cong-van.xml"
        )
        wait_for(
            "the document in the recipient's inbox folder",
            lambda: any((spool_of[DISTRICT_B] / "inbox").glob("*.xml")),
            network,
        )
        (delivered,) = (spool_of[DISTRICT_B] / "inbox").glob("*.xml")
        attachments = [p.name for p in delivered.with_suffix("").iterdir()]
        assert attachments == ["cong-van.txt"]
        wait_for(
            "status 01 in the sender's status folder",
            lambda: any((spool_of[COMMUNE_A] / "status").glob("*.01.*.xml")),
            network,
        )
        assert not any((spool_of[COMMUNE_A] / "outbox").glob("*.xml"))
        assert not any((spool_of[COMMUNE_A] / "rejected").iterdir())
    finally:
        network.stop()
        network.kill()


def test_real_traffic_variants_cross_six_hops_byte_for_byte(net: Network, tmp_path: Path) -> None:
    """Every real-traffic variant (tests/data/real_*.xml) is taken at a commune in the default
    lenient mode, signed, carried six hops, delivered with status 01, and arrives as the very
    bytes that left (its package id, the sha256 of the bytes, is the same at both ends)."""
    data_dir = Path(__file__).parent / "data"
    names = sorted(
        p.name for p in data_dir.glob("real_*.xml") if p.name != "real_test_system_codes.xml"
    )
    files, document_ids_sent = [], []
    for number, name in enumerate(names, start=700):
        data = (data_dir / name).read_bytes()
        for old, new in (
            ("000.00.00.G22", COMMUNE_A),
            ("000.00.00.H49", PROVINCE_B),
            ("000.00.12.H49", COMMUNE_B),
            ("7816", str(number)),
        ):
            data = data.replace(old.encode(), new.encode())
        path = tmp_path / name
        path.write_bytes(data)
        files.append(path)
        document_ids_sent.append(parse(data).document_id)
    send(net, COMMUNE_A, *files)
    for document_id in document_ids_sent:
        wait_for(
            f"{document_id} with its status 01 at the sender",
            lambda d=document_id: any(  # type: ignore[misc]
                r.level == "status" and r.code == "01" and r.by == COMMUNE_B
                for r in receipts(net, COMMUNE_A, d)
            ),
            net,
        )
    delivered = {e.document_id: e.package_id for e in inbox(net, COMMUNE_B) if e.kind == "edoc"}
    for document_id in document_ids_sent:
        sent = {
            p.package_id
            for view in net.views(document_id)
            if view.node == COMMUNE_A
            for p in view.packages
            if p.meta.kind == "edoc"
        }
        assert delivered[document_id] in sent
    axis = document_ids_sent[names.index("real_axis_2025.xml")]
    traced = net.lienthong(COMMUNE_B, "trace", axis)
    assert traced.returncode == 0, traced.stderr
    assert "SignerInfo: is missing [signer_info], accepted" in traced.stdout


def test_a_frame_from_a_node_that_is_not_a_neighbour_is_dropped(net: Network) -> None:
    """A province publishes through the national broker (which serves it) into the other
    province's inbox: they are not neighbours (no peer link joins them), so the other province
    drops the frame before storing it and says who sent it."""
    document_id = f"{PROVINCE_A},{time.strftime('%Y/%m/%d')},913/UBND-VP"
    data = build(
        new_edoc(
            from_code=PROVINCE_A,
            to_codes=[PROVINCE_B],
            subject="Gửi vượt tuyến",
            attachments=[],
            today=dt.date.today(),
            number="913",
            notation="UBND-VP",
        )
    )
    frames = split_into_frames("f" * 32, "edoc", [PROVINCE_B], data, 64 * 1024)

    async def inject() -> None:
        # Another client id: the province's daemon keeps its own session on this broker.
        async with net.brokers[NATIONAL].client(PROVINCE_A, identifier="intruder") as client:
            for frame in frames:
                payload = encode_frame(frame)
                await client.publish(inbox_topic(PROVINCE_B, PROVINCE_A), payload, qos=1)

    asyncio.run(inject())
    wait_for(
        "the province's refusal of the stranger's frame",
        lambda: '"frame_from_stranger"' in net.nodes[PROVINCE_B].log(),
        net,
    )
    line = next(x for x in net.nodes[PROVINCE_B].log().splitlines() if '"frame_from_stranger"' in x)
    assert PROVINCE_A in line
    assert not any(view.packages for view in net.views(document_id))


def test_each_node_measures_its_neighbours_clock_from_their_receipts(
    net: Network, tmp_path: Path
) -> None:
    """After a document has left, the sender's /metrics shows its parent's clock skew (the
    same machine here, so within seconds), which `lienthong check` reports."""
    send(net, COMMUNE_A, write_document(tmp_path, COMMUNE_A, [COMMUNE_B], "Giờ", "921"))
    url = f"http://127.0.0.1:{net.nodes[COMMUNE_A].api_port}/metrics"

    def skew() -> float | None:
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode("utf-8")
        for line in text.splitlines():
            if line.startswith(f'lienthong_clock_skew_seconds{{neighbour="{DISTRICT_A}"}}'):
                return float(line.split()[-1])
        return None

    wait_for("a hop receipt from the district", lambda: skew() is not None, net)
    measured = skew()
    assert measured is not None
    assert abs(measured) < 5.0
