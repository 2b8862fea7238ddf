"""The directory commands: publish, apply, show, diff and status, on real files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lienthong.cli import main
from lienthong.devnet.network import render_toml, topology_text
from lienthong.dirfiles import VersionFiles
from lienthong.dirversion import peek_version
from lienthong.trust.pki import issue_agency, make_ca

PROVINCE = "000.00.00.H49"


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """An authority pair, the four-tier directory file and a province node's config."""
    authority = issue_agency(make_ca("CA", key_type="ec"), "authority", key_type="ec")
    (tmp_path / "authority.key").write_bytes(authority.key_pem())
    (tmp_path / "authority.crt").write_bytes(authority.cert_pem())
    (tmp_path / "directory.toml").write_text(topology_text("four-tier"), encoding="utf-8")
    config = {
        "node": {"code": PROVINCE, "state_dir": "state", "directory": "directory.toml"},
        "directory": {"authority": "authority.crt"},
    }
    (tmp_path / "node.toml").write_text(render_toml(config), encoding="utf-8")
    return tmp_path


def _publish(site: Path, number: int, source: Path, *extra: str) -> Path:
    out = site / f"v{number}.json"
    args = ["directory", "publish", str(source), "--key", str(site / "authority.key")]
    args += ["--cert", str(site / "authority.crt"), "--version", str(number)]
    assert main([*args, "--expires", "30", "-o", str(out), *extra]) == 0
    return out


def test_publish_writes_a_signed_version_that_show_reads(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """publish signs the TOML as version N; show checks it with --authority and summarises."""
    out = _publish(site, 4, site / "directory.toml")
    assert peek_version(out.read_bytes()).number == 4
    capsys.readouterr()
    assert main(["directory", "show", str(out), "--authority", str(site / "authority.crt")]) == 0
    text = capsys.readouterr().out
    assert "version 4 (issued" in text
    assert "agencies: 8 (1 / 2 / 3 / 2 by tier), nodes: 7" in text
    assert "signature not checked" not in text


def test_show_refuses_a_forged_version_with_the_reason(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A version altered after signing is refused by show --authority, exit 1."""
    out = _publish(site, 2, site / "directory.toml")
    out.write_bytes(out.read_bytes().replace(b"Kh\xc3\xa1nh H\xc3\xb2a", b"Kh\xc3\xa1nh Hoa"))
    capsys.readouterr()
    assert main(["directory", "show", str(out), "--authority", str(site / "authority.crt")]) == 1
    assert "does not verify with the directory authority" in capsys.readouterr().err


def test_diff_lists_an_added_agency_between_a_file_and_a_version(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """diff reads a TOML file and a version file alike."""
    changed = site / "changed.toml"
    changed.write_text(
        topology_text("four-tier")
        + '\n[[agency]]\ncode = "000.00.02.H49"\nname = "Sở Tài chính"\n',
        encoding="utf-8",
    )
    out = _publish(site, 2, changed)
    capsys.readouterr()
    assert main(["directory", "diff", str(site / "directory.toml"), str(out)]) == 0
    assert capsys.readouterr().out.strip() == f"+ 000.00.02.H49 Sở Tài chính (under {PROVINCE})"


def test_status_says_bootstrap_then_the_applied_version(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without a stored version the directory file is version 0; a stored one then wins."""
    config = str(site / "node.toml")
    assert main(["directory", "status", "--config", config]) == 0
    assert "bootstrap version 0" in capsys.readouterr().out
    out = _publish(site, 3, site / "directory.toml", "--config", config)
    assert "handed version 3" in capsys.readouterr().out
    files = VersionFiles(site / "state")
    assert next(p.name for p in files.incoming()).startswith("v3-")
    files.write(peek_version(out.read_bytes()))
    assert main(["directory", "status", "--config", config, "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["version"] == 3
    assert status["expiry"] == "ok"


def test_apply_refuses_a_version_the_node_cannot_verify(
    site: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A version signed by another authority is not handed to the node at all."""
    other = issue_agency(make_ca("other", key_type="ec"), "other", key_type="ec")
    (site / "other.key").write_bytes(other.key_pem())
    (site / "other.crt").write_bytes(other.cert_pem())
    out = site / "forged.json"
    args = ["directory", "publish", str(site / "directory.toml"), "--key", str(site / "other.key")]
    args += ["--cert", str(site / "other.crt"), "--version", "9", "--expires", "2", "-o", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["directory", "apply", str(out), "--config", str(site / "node.toml")]) == 1
    assert "does not verify" in capsys.readouterr().err
    assert VersionFiles(site / "state").incoming() == []
