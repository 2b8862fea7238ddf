"""Setting a node up: `lienthong init`, `broker-config` and `check`, on real files, real
certificates and a real mosquitto."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import pwd
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lienthong.brokersetup import free_port
from lienthong.cli import main
from lienthong.config import check_for_daemon, load_config
from lienthong.devnet.network import topology_text
from lienthong.errors import ConfigError
from lienthong.health import Check
from lienthong.nodecheck import check_node_setup
from lienthong.provision import Address, parse_address
from lienthong.trust import pki

PROVINCE = "000.00.00.H49"  # in the four-tier directory: parent G22, one child 000.00.05.H49
needs_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="mosquitto is not installed",
)
needs_nats = pytest.mark.skipif(
    shutil.which("nats-server") is None and not Path("/usr/sbin/nats-server").exists(),
    reason="nats-server is not installed",
)


def _synced() -> Check:
    return Check("clock", True, "synchronised by NTP")


def _init(tmp_path: Path, *extra: str) -> tuple[int, Path]:
    config = tmp_path / "etc" / "lienthong.toml"
    directory = tmp_path / "four-tier.toml"
    directory.write_text(topology_text("four-tier"), encoding="utf-8")
    status = main(
        [
            "init",
            "--config",
            str(config),
            "--agency",
            PROVINCE,
            "--state-dir",
            str(tmp_path / "state"),
            "--directory",
            str(directory),
            *extra,
        ]
    )
    return status, config


@pytest.fixture
def node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A province node set up by `lienthong init --dev-ca` with a broker for its children."""
    status, config = _init(
        tmp_path,
        "--parent",
        "127.0.0.1:1",
        "--children",
        "127.0.0.1:1",
        "--dev-ca",
        str(tmp_path / "ca"),
    )
    assert status == 0
    capsys.readouterr()
    return config


def test_parse_address_takes_host_port_and_ipv6() -> None:
    """HOST, HOST:PORT and [IPv6]:PORT are read; anything else is refused with the option."""
    assert parse_address("mq.example.vn", 8883, "--parent") == Address("mq.example.vn", 8883)
    assert parse_address("10.0.0.1:1884", 8883, "--parent") == Address("10.0.0.1", 1884)
    assert parse_address("[::1]:9", 8883, "--api") == Address("::1", 9)
    for bad in ("", "a b", "host:port", "host:70000"):
        with pytest.raises(ConfigError, match="--parent"):
            parse_address(bad, 8883, "--parent")


def test_init_dev_ca_writes_a_config_the_daemon_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """init --dev-ca writes a configuration that passes the daemon's checks, a key only its
    owner and group read, a certificate for the agency code, and prints the fingerprint the
    parent adds to its directory."""
    status, path = _init(
        tmp_path, "--parent", "mq.h49.example.vn", "--dev-ca", str(tmp_path / "ca")
    )
    assert status == 0
    out = capsys.readouterr().out
    config = load_config(path)
    check_for_daemon(config)
    assert config.node.code == PROVINCE
    assert (config.links.parent.host, config.links.parent.port) == ("mq.h49.example.vn", 8883)
    assert not config.links.children.enabled
    assert (config.gateway.host, config.gateway.port) == ("127.0.0.1", 8866)
    assert stat.S_IMODE(config.identity.key.stat().st_mode) == 0o640
    cert = x509.load_pem_x509_certificate(config.identity.cert.read_bytes())
    assert pki.common_name(cert) == PROVINCE
    assert main(["keys", "fingerprint", str(config.identity.cert)]) == 0
    fingerprint = capsys.readouterr().out.split()[0]
    assert f'signers = ["{fingerprint}"]' in out
    assert f'code = "{PROVINCE}"' in out


def test_init_without_dev_ca_writes_a_request_for_the_state_ca(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --dev-ca, init writes a certificate signing request (CN = the code, signed by
    the new key), installs the given CA certificate, and says where the answer goes."""
    ca = pki.make_ca("Root CA of the state", key_type="ec")
    ca_file = tmp_path / "state-ca.crt"
    ca_file.write_bytes(ca.cert_pem())
    status, path = _init(tmp_path, "--parent", "mq.example.vn:9883", "--ca", str(ca_file))
    assert status == 0
    out = capsys.readouterr().out
    folder = path.parent
    csr = x509.load_pem_x509_csr((folder / "agency.csr").read_bytes())
    assert csr.is_signature_valid
    assert pki.common_name(csr) == PROVINCE
    key = serialization.load_pem_private_key((folder / "agency.key").read_bytes(), None)
    spki = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    assert csr.public_key().public_bytes(*spki) == key.public_key().public_bytes(*spki)
    assert (folder / "trust" / "ca.crt").read_bytes() == ca.cert_pem()
    assert f"send {folder / 'agency.csr'} to the state CA" in out
    assert not (folder / "agency.crt").exists()


def test_init_keeps_an_existing_config_and_key(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """init refuses to replace a configuration without --force, and never replaces the key
    (the certificates name it)."""
    key = (node.parent / "agency.key").read_bytes()
    status, _ = _init(tmp_path, "--parent", "mq.example.vn", "--dev-ca", str(tmp_path / "ca"))
    assert status == 2
    assert "exists" in capsys.readouterr().err
    status, _ = _init(
        tmp_path, "--parent", "mq.example.vn", "--dev-ca", str(tmp_path / "ca"), "--force"
    )
    assert status == 0
    assert (node.parent / "agency.key").read_bytes() == key
    assert "kept " in capsys.readouterr().out


def test_init_without_a_terminal_names_the_missing_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Run without a terminal and without --parent, init says which option to give."""
    status = main(["init", "--config", str(tmp_path / "x.toml"), "--agency", PROVINCE])
    assert status == 2
    assert "--parent HOST[:PORT] or --no-parent" in capsys.readouterr().err


def _broker_config(node: Path, tmp_path: Path, *extra: str) -> int:
    return main(
        [
            "broker-config",
            "--config",
            str(node),
            "--out",
            str(tmp_path / "broker"),
            "--persistence",
            str(tmp_path / "broker-state"),
            # pytest's folders are private to the user running the tests
            "--user",
            pwd.getpwuid(os.getuid()).pw_name,
            *extra,
        ]
    )


@needs_mosquitto
def test_broker_config_writes_and_test_starts_the_childrens_broker(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """broker-config writes mosquitto.conf, the ACL and the certificates in a folder of the
    broker's own, starts mosquitto on them once, and names the children."""
    assert _broker_config(node, tmp_path) == 0
    out = capsys.readouterr().out
    assert "tested mosquitto" in out
    assert "000.00.05.H49" in out
    folder = tmp_path / "broker"
    conf = (folder / "mosquitto.conf").read_text(encoding="utf-8")
    assert f"acl_file {folder / 'acl.conf'}" in conf
    assert f"keyfile {folder / 'broker.key'}" in conf
    assert "require_certificate true" in conf
    assert "listener 1 0.0.0.0" in conf
    assert stat.S_IMODE((folder / "broker.key").stat().st_mode) == 0o640


@needs_mosquitto
def test_broker_config_test_start_refuses_a_certificate_from_another_ca(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A broker certificate the node's CA did not issue fails the test start, with mosquitto's
    words or the TLS error."""
    other = pki.make_ca("another CA", key_type="ec")
    server = pki.issue_server(other, "127.0.0.1", ["127.0.0.1"], key_type="ec")
    (node.parent / "broker.crt").write_bytes(server.cert_pem())
    (node.parent / "broker.key").write_bytes(server.key_pem())
    assert _broker_config(node, tmp_path) == 1
    assert "did not accept" in capsys.readouterr().err


ROUTES = ("--route", "n1.example:6222", "--route", "n2.example:6222", "--route", "n3:6222")


@needs_nats
def test_broker_config_nats_writes_a_cluster_member_and_test_starts_it(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """broker-config --engine nats writes one member's nats-server.conf (routes to the three
    members, a user per node of the directory with its permissions), starts it alone once, and
    says how to start it."""
    assert _broker_config(node, tmp_path, "--engine", "nats", "--name", "n1", *ROUTES) == 0
    out = capsys.readouterr().out
    assert "tested nats" in out
    conf = (tmp_path / "broker" / "nats-server.conf").read_text(encoding="utf-8")
    assert 'server_name: "n1"' in conf
    assert '"nats-route://n3:6222"' in conf
    for code in (PROVINCE, "000.00.05.H49"):
        assert f'user: "CN={code}"' in conf
        assert f'"lienthong.v1.*.in.{code.replace(".", "_")}"' in conf
    assert str(tmp_path / "broker-state") in conf


def test_broker_config_nats_wants_three_routes_and_mosquitto_none(
    node: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A NATS member without the three members' routes, and --route for mosquitto, are refused
    with what to give."""
    assert _broker_config(node, tmp_path, "--engine", "nats", "--no-test") == 1
    assert "three members" in capsys.readouterr().err
    assert _broker_config(node, tmp_path, "--no-test", *ROUTES) == 1
    assert "--route is for --engine nats" in capsys.readouterr().err


def test_broker_config_refuses_a_node_without_children(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A node with no children's broker configured gets told it needs none."""
    status, config = _init(tmp_path, "--parent", "127.0.0.1:1", "--dev-ca", str(tmp_path / "ca"))
    assert status == 0
    assert _broker_config(config, tmp_path) == 2
    assert "needs no broker" in capsys.readouterr().err


@needs_mosquitto
def test_check_reports_each_part_ok_or_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With the children's broker running, check passes the config, directory, certificate,
    binding, chain and that broker, and says the unreachable parent must be reachable."""
    status, node = _init(
        tmp_path,
        "--parent",
        "127.0.0.1:1",
        "--children",
        f"127.0.0.1:{free_port()}",
        "--dev-ca",
        str(tmp_path / "ca"),
    )
    assert status == 0
    assert _broker_config(node, tmp_path) == 0
    capsys.readouterr()
    broker = subprocess.Popen(
        ["mosquitto", "-c", str(tmp_path / "broker" / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        checks = _wait_for_children_broker(node)
    finally:
        broker.terminate()
        broker.wait(10)
    by_name = {(c.name, c.ok) for c in checks}
    for name in ("config", "directory", "directory age", "certificate", "binding", "chain"):
        assert (name, True) in by_name, checks
    assert ("broker children", True) in by_name, checks
    (parent,) = [c for c in checks if c.name == "broker parent"]
    assert not parent.ok
    assert "cannot reach 127.0.0.1:1" in parent.reason
    assert "firewall" in parent.reason


def _wait_for_children_broker(config: Path) -> list[Check]:
    checks: list[Check] = []
    for _ in range(100):
        checks = check_node_setup(config, now=dt.datetime.now(dt.UTC), clock=_synced)
        if any(c.name == "broker children" and c.ok for c in checks):
            break
    return checks


def test_check_finds_an_expired_certificate_and_a_foreign_one(node: Path) -> None:
    """An expired certificate is reported with what to do; one issued for another code fails
    the binding."""
    ca_dir = node.parent.parent / "ca"
    ca = pki.CertifiedKey.from_pem(
        (ca_dir / "ca.key").read_bytes(), (ca_dir / "ca.crt").read_bytes()
    )
    cert_path = node.parent / "agency.crt"
    key = serialization.load_pem_private_key((node.parent / "agency.key").read_bytes(), None)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=400)
    expired = pki.issue_agency(
        ca,
        PROVINCE,
        key=key,
        not_before=past,
        not_after=past + dt.timedelta(days=30),
    )
    cert_path.write_bytes(expired.cert_pem())
    checks = check_node_setup(node, now=dt.datetime.now(dt.UTC), clock=_synced, tls_timeout=1)
    (cert,) = [c for c in checks if c.name == "certificate"]
    assert not cert.ok
    assert "expired" in cert.reason
    assert "ask the state CA" in cert.reason

    foreign = pki.issue_agency(ca, "000.00.00.H41", key=key)
    cert_path.write_bytes(foreign.cert_pem())
    checks = check_node_setup(node, now=dt.datetime.now(dt.UTC), clock=_synced, tls_timeout=1)
    (binding,) = [c for c in checks if c.name == "binding"]
    assert not binding.ok
    assert "000.00.00.H41, not 000.00.00.H49" in binding.reason


def test_check_names_the_fingerprint_the_directory_lacks(node: Path) -> None:
    """When the directory lists other signers for the node, check gives the code and the
    fingerprint to send to the parent."""
    directory = node.parent / "directory.toml"
    text = directory.read_text(encoding="utf-8")
    other = "ab" * 32
    text = text.replace(f'code = "{PROVINCE}"', f'code = "{PROVINCE}"\nsigners = ["{other}"]', 1)
    directory.write_text(text, encoding="utf-8")
    checks = check_node_setup(node, now=dt.datetime.now(dt.UTC), clock=_synced, tls_timeout=1)
    (binding,) = [c for c in checks if c.name == "binding"]
    assert not binding.ok
    assert f"give the parent node the code {PROVINCE} and the fingerprint" in binding.reason


def test_check_of_a_broken_config_stops_at_the_first_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A configuration that does not load gives one FAIL line naming the key and exit 1."""
    config = tmp_path / "lienthong.toml"
    config.write_text('[node]\ncode = "000.00.00.H49"\nbogus = 1\n', encoding="utf-8")
    assert main(["check", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAIL  config")
    assert "node.bogus" in out


def test_check_directory_age(node: Path) -> None:
    """A directory file older than 30 days is reported with what to do."""
    directory = node.parent / "directory.toml"
    old = dt.datetime.now(dt.UTC) - dt.timedelta(days=45)
    os.utime(directory, (old.timestamp(), old.timestamp()))
    checks = check_node_setup(node, now=dt.datetime.now(dt.UTC), clock=_synced, tls_timeout=1)
    (age,) = [c for c in checks if c.name == "directory age"]
    assert not age.ok
    assert "ask the parent node for the current one" in age.reason


def test_init_on_a_terminal_asks_for_what_is_missing(tmp_path: Path) -> None:
    """On a terminal, init asks for the agency code, the parent's broker and the API address
    (offering the default), and writes the config from the answers."""
    config = tmp_path / "etc" / "lienthong.toml"
    primary, secondary = os.openpty()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "lienthong", "init", "--config", str(config)),
            *("--dev-ca", str(tmp_path / "ca"), "--state-dir", str(tmp_path / "state")),
        ],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
    )
    os.close(secondary)
    os.write(primary, b"000.00.12.H49\nmq.h49.example.vn:9883\n\n")
    said = b""
    with contextlib.suppress(OSError):  # the terminal closes when the process ends
        while chunk := os.read(primary, 4096):
            said += chunk
    assert process.wait(60) == 0, said.decode()
    os.close(primary)
    assert b"Agency code of this node" in said
    assert b"[127.0.0.1:8866]" in said
    loaded = load_config(config)
    assert loaded.node.code == "000.00.12.H49"
    assert (loaded.links.parent.host, loaded.links.parent.port) == ("mq.h49.example.vn", 9883)
    assert loaded.gateway.port == 8866
