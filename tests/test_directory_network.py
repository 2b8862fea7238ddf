"""Directory versions across a real network: the four-tier daemons and brokers, with a
directory the size of the state (about 4,500 agencies), versions published at the national
node only and carried down the tree by the daemons themselves."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import tomllib
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from test_network import wait_for

from lienthong.devnet.network import Network, topology_text
from lienthong.devnet.statesize import state_directory, to_toml
from lienthong.dirfiles import VersionFiles
from lienthong.dirversion import make_version
from lienthong.edxml import EdocPackage, build, new_edoc
from lienthong.keyfiles import load_identity
from lienthong.processing import certificate_fingerprint
from lienthong.store import SqliteStore
from lienthong.trust import sign_package
from lienthong.trust.keys import load_certificates, load_private_key

NATIONAL = "000.00.00.G22"
PROVINCE_A, DISTRICT_A, COMMUNE_B = "000.00.00.H49", "000.00.05.H49", "000.03.07.H41"
PROVINCE_B = "000.00.00.H41"
NEW_AGENCY = "000.00.99.H49"  # a new department of Quảng Nam, served by the province's node
MOVED = "000.02.05.H49"  # a commune with no node, served by its district until version 2
RENAMED, RENAMED_TO = "000.00.01.H41", "000.00.41.H41"  # a department of Khánh Hòa, version 3
T = TypeVar("T")
FAST = {
    "transfer": {"receipt_timeout_s": 3.0, "poll_s": 0.3},
    "store.retry": {"base_delay_s": 0.5, "max_delay_s": 3.0},
    "daemon": {"drain_grace_s": 3.0},
}


def _state_document() -> dict[str, Any]:
    document = state_directory(tomllib.loads(topology_text("four-tier")), filler_nodes=False)
    document["agency"].append({"code": MOVED, "name": "UBND xã Duy Hòa"})
    return document


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """The seven daemons and five brokers, every node reading the state-sized directory."""
    network = Network(tmp_path_factory.mktemp("dirnet"), to_toml(_state_document()), overrides=FAST)
    try:
        network.start()
        yield network
    finally:
        network.stop()
        network.kill()


def _everywhere(net: Network, number: int) -> bool:
    return all(net.directory_version(code) == number for code in net.nodes)


_NUMBERS = itertools.count(1)


def _package(sender: str, recipient: str, subject: str) -> EdocPackage:
    """A document with a number of its own, so each has its own DocumentId."""
    return new_edoc(
        from_code=sender,
        to_codes=[recipient],
        subject=subject,
        attachments=[("van-ban.txt", subject.encode(), "text/plain")],
        today=dt.date.today(),
        number=str(next(_NUMBERS)),
    )


def _send(net: Network, sender: str, recipient: str, subject: str) -> str:
    cert, key = net.pki.client_files(sender)
    pkg = _package(sender, recipient, subject)
    path = net.root / f"{pkg.document_id.replace('/', '_')}.xml"
    path.write_bytes(sign_package(build(pkg), load_identity(key, cert)))
    result = net.lienthong(sender, "send", str(path))
    assert result.returncode == 0, result.stderr
    return pkg.document_id


def test_a_new_agency_published_at_the_national_node_gets_documents_from_afar(
    net: Network,
) -> None:
    """Version 1 adds a department under Quảng Nam (with its signer); every node applies it
    from the national node alone, and a commune of Khánh Hòa then reaches the department."""
    assert net.directory_version(COMMUNE_B) == 0
    refused = net.lienthong(COMMUNE_B, "send", str(_unsigned(net, COMMUNE_B, NEW_AGENCY)))
    assert refused.returncode == 1
    assert f"{NEW_AGENCY} is not in the directory" in refused.stderr
    output = _publish(net, 1, _version_1(net))
    assert "handed version 1" in output
    wait_for("version 1 at every node", lambda: _everywhere(net, 1), net)
    document_id = _send(net, COMMUNE_B, NEW_AGENCY, "Gửi Sở Ngoại vụ mới thành lập")
    wait_for(
        "delivery to the new agency",
        lambda: any(
            e.document_id == document_id and e.recipient == NEW_AGENCY
            for e in net.inbox(PROVINCE_A)
        ),
        net,
    )
    assert "directory_version_applied" in net.nodes[COMMUNE_B].log()


def _version_1(net: Network) -> dict[str, Any]:
    """Version 1: the state plus a new department of Quảng Nam with its signer."""
    document = _state_document()
    cert, _ = net.pki.client_files(NEW_AGENCY)
    fingerprint = certificate_fingerprint(load_certificates(cert.read_bytes())[0])
    document["agency"].append(
        {"code": NEW_AGENCY, "name": "Sở Ngoại vụ tỉnh Quảng Nam", "signers": [fingerprint]}
    )
    return document


def _publish(net: Network, number: int, document: dict[str, Any], *extra: str) -> str:
    """Sign ``document`` as version ``number`` and hand it to the national node."""
    source = net.root / f"directory-v{number}.toml"
    source.write_text(to_toml(document), encoding="utf-8")
    return net.publish_directory(
        source, number, "--config", str(net.nodes[NATIONAL].config_path), *extra
    )


def _unsigned(net: Network, sender: str, recipient: str) -> Path:
    pkg = _package(sender, recipient, "Trước khi có danh bạ mới")
    path = net.root / "before.xml"
    path.write_bytes(build(pkg))
    return path


def _signed_by(
    net: Network, number: int, issued: dt.datetime, pair: tuple[Path, Path] | None = None
) -> bytes:
    cert_path, key_path = pair or (net.authority_cert, net.authority_key)
    cert = load_certificates(cert_path.read_bytes())[0]
    return make_version(
        _state_document(),
        number=number,
        issued=issued,
        expires=issued + dt.timedelta(days=30),
        key=load_private_key(key_path.read_bytes()),
        cert=cert,
    )


def test_forged_older_and_expired_versions_are_refused_and_the_current_one_kept(
    net: Network,
) -> None:
    """Dropped at a province node, each refused version is kept in refused/ with its reason,
    and the node goes on with the version in force."""
    if net.directory_version(PROVINCE_A) < 1:
        pytest.skip("needs the version published by the test before")
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    forged = bytearray(_signed_by(net, 7, now))
    forged[-50] ^= 1  # one bit of the body flipped after signing
    cases = {
        "forged": bytes(forged),
        "impostor": _signed_by(net, 8, now, net.pki.client_files("000.00.00.H41")),
        "older": _signed_by(net, 1, now),
        "expired": _signed_by(net, 9, now - dt.timedelta(days=60)),
    }
    files = VersionFiles(net.nodes[PROVINCE_A].workdir / "state")
    for name, data in cases.items():
        files.put_incoming(data, name)
    wait_for(
        "every version refused", lambda: len(list(files.refused_dir.glob("*.reason"))) == 4, net
    )
    reasons = {
        path.name.removesuffix(".json.reason"): path.read_text(encoding="utf-8")
        for path in files.refused_dir.glob("*.reason")
    }
    assert "does not verify with the directory authority" in reasons["forged"]
    assert "names the signer" in reasons["impostor"]
    assert "not newer than version 1" in reasons["older"]
    assert "expired at" in reasons["expired"]
    assert net.directory_version(PROVINCE_A) == 1


def _store(net: Network, code: str, call: Callable[[SqliteStore], Awaitable[T]]) -> T:
    """Run ``call`` on ``code``'s store, beside its daemon (or with it stopped)."""

    async def main() -> T:
        async with SqliteStore(net.nodes[code].workdir / "state") as store:
            return await call(store)

    return asyncio.run(main())


def _waiting_at(net: Network, code: str, hop: str) -> int:
    """Transfers at ``code`` for ``hop`` that are queued, in flight or dead."""
    return sum(t.next_hop == hop for t in _store(net, code, lambda s: s.open_transfers()))


def _status_01(net: Network, sender: str, document_id: str, by: str) -> int:
    """How many status 01 from ``by`` the sending node holds about ``document_id``."""
    return sum(
        r.level == "status" and r.code == "01" and r.by == by
        for r in net.receipts(sender, document_id)
    )


def _stored_by(net: Network, code: str, hop: str, document_ids: list[str]) -> bool:
    """True when ``code``'s node holds a hop receipt from ``hop`` for each document."""
    return all(
        any(r.level == "hop" and r.by == hop for r in net.receipts(code, d)) for d in document_ids
    )


def _delivered(net: Network, code: str, document_ids: list[str], recipient: str) -> list[int]:
    """How many inbox entries for ``recipient`` each document has at ``code``'s node."""
    entries = net.inbox(code)
    return [
        sum(e.document_id == d and e.recipient == recipient for e in entries) for d in document_ids
    ]


def test_a_commune_moved_under_its_province_loses_none_of_the_documents_queued_for_it(
    net: Network,
) -> None:
    """The district is down, so documents to one of its communes wait at the province; a
    version that moves the commune under the province (served by the province's node) is
    published at the national node, and each document is delivered there exactly once with
    its status 01 back to the sender. When the district returns, with the new version handed
    to it first, the copies that waited for it in its broker are passed on and recognised:
    still exactly once."""
    if net.directory_version(PROVINCE_A) < 1:
        pytest.skip("needs the version published by the first test")
    net.nodes[DISTRICT_A].stop()
    documents = [_send(net, NATIONAL, MOVED, f"Gửi xã Duy Hòa số {i}") for i in range(3)]
    wait_for(
        "documents waiting for the district",
        lambda: _waiting_at(net, PROVINCE_A, DISTRICT_A) == 3,
        net,
    )

    document = _version_1(net)
    next(a for a in document["agency"] if a["code"] == MOVED)["parent"] = PROVINCE_A
    _publish(net, 2, document)
    wait_for(
        "delivery at the province",
        lambda: _delivered(net, PROVINCE_A, documents, MOVED) == [1, 1, 1],
        net,
    )
    wait_for(
        "a status 01 for each",
        lambda: [_status_01(net, NATIONAL, d, MOVED) for d in documents] == [1, 1, 1],
        net,
    )
    assert _waiting_at(net, PROVINCE_A, DISTRICT_A) == 0
    assert "transfer_rerouted" in net.nodes[PROVINCE_A].log()

    applied = net.lienthong(DISTRICT_A, "directory", "apply", str(net.root / "directory-v2.json"))
    assert applied.returncode == 0, applied.stderr
    net.start([DISTRICT_A])
    wait_for(
        "the district's late hop receipts at the province",
        lambda: _stored_by(net, PROVINCE_A, DISTRICT_A, documents),
        net,
    )
    wait_for(
        "the district passing its copies on",
        lambda: _stored_by(net, DISTRICT_A, PROVINCE_A, documents),
        net,
    )
    assert net.directory_version(DISTRICT_A) == 2
    assert _delivered(net, DISTRICT_A, documents, MOVED) == [0, 0, 0]
    assert _delivered(net, PROVINCE_A, documents, MOVED) == [1, 1, 1]
    assert [_status_01(net, NATIONAL, d, MOVED) for d in documents] == [1, 1, 1]


def test_a_document_to_a_renamed_code_arrives_under_the_new_one(net: Network) -> None:
    """Version 3 renames a department of Khánh Hòa with an alias; a document the other
    province addresses to the old code reaches the new one, whose status 01 comes back, and
    getSentEdocList at the sender shows it against the code the document was sent to."""
    if net.directory_version(PROVINCE_A) < 2:
        pytest.skip("needs the version published by the test before")
    document = _version_1(net)
    next(a for a in document["agency"] if a["code"] == MOVED)["parent"] = PROVINCE_A
    renamed = next(a for a in document["agency"] if a["code"] == RENAMED)
    renamed["code"] = RENAMED_TO
    until = (dt.date.today() + dt.timedelta(days=30)).isoformat()
    _publish(net, 3, document, "--alias", f"{RENAMED}={RENAMED_TO}@{until}")
    wait_for("version 3 at every node", lambda: _everywhere(net, 3), net)

    office = net.office(PROVINCE_A)
    package = build(_package(PROVINCE_A, RENAMED, "Gửi Sở theo mã cũ"))
    reply = asyncio.run(
        office.send_edoc(
            {"from": PROVINCE_A, "servicetype": "eDoc", "messagetype": "edoc", "to": [RENAMED]},
            package,
        )
    )
    assert reply is not None
    assert reply.ok, reply.desc
    doc_id = str(reply.json["DocId"])
    document_id = _store(net, PROVINCE_A, lambda s: s.get_package(doc_id)).meta.document_id
    wait_for(
        "delivery under the new code",
        lambda: _delivered(net, PROVINCE_B, [document_id], RENAMED_TO) == [1],
        net,
    )
    wait_for(
        "the status 01 of the new code",
        lambda: _status_01(net, PROVINCE_A, document_id, RENAMED_TO) == 1,
        net,
    )
    listed = asyncio.run(
        office.get_sent_edoc_list({"servicetype": "eDoc", "messagetype": "edoc", "docId": doc_id})
    )
    (row,) = listed.json["data"]
    assert (row["toCode"], row["receiveStatus"]) == (RENAMED, "01")
    assert row["sendStatus"] == "sent"
