"""Directory versions across a real network: the four-tier daemons and brokers, with a
directory the size of the state (about 4,500 agencies), versions published at the national
node only and carried down the tree by the daemons themselves."""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_network import wait_for

from lienthong.devnet.network import Network, topology_text
from lienthong.devnet.statesize import state_directory, to_toml
from lienthong.dirfiles import VersionFiles
from lienthong.dirversion import make_version
from lienthong.edxml import EdocPackage, build, new_edoc
from lienthong.keyfiles import load_identity
from lienthong.processing import certificate_fingerprint
from lienthong.trust import sign_package
from lienthong.trust.keys import load_certificates, load_private_key

NATIONAL = "000.00.00.G22"
PROVINCE_A, COMMUNE_B = "000.00.00.H49", "000.03.07.H41"
NEW_AGENCY = "000.00.99.H49"  # a new department of Quảng Nam, served by the province's node
FAST = {
    "transfer": {"receipt_timeout_s": 3.0, "poll_s": 0.3},
    "store.retry": {"base_delay_s": 0.5, "max_delay_s": 3.0},
    "daemon": {"drain_grace_s": 3.0},
}


def _state_document() -> dict[str, Any]:
    return state_directory(tomllib.loads(topology_text("four-tier")), filler_nodes=False)


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


def _package(sender: str, recipient: str, subject: str) -> EdocPackage:
    return new_edoc(
        from_code=sender,
        to_codes=[recipient],
        subject=subject,
        attachments=[("van-ban.txt", subject.encode(), "text/plain")],
        today=dt.date.today(),
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
    document = _state_document()
    cert, _ = net.pki.client_files(NEW_AGENCY)
    fingerprint = certificate_fingerprint(load_certificates(cert.read_bytes())[0])
    document["agency"].append(
        {"code": NEW_AGENCY, "name": "Sở Ngoại vụ tỉnh Quảng Nam", "signers": [fingerprint]}
    )
    source = net.root / "directory-v1.toml"
    source.write_text(to_toml(document), encoding="utf-8")
    output = net.publish_directory(source, 1, "--config", str(net.nodes[NATIONAL].config_path))
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
