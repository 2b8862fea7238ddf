"""The trust commands (pki init, sign, verify) and the key-file helpers they use."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import Encoding

from lienthong import keyfiles
from lienthong.cli import main
from lienthong.errors import ConfigError
from lienthong.trust import pki

H49 = "000.00.12.H49"
H50 = "000.00.12.H50"


def _sign_as(pki_dir: Path, source: Path, out: Path, *extra: str) -> int:
    """Run `lienthong sign` with the 000.00.12.H49 key made by pki init."""
    key, cert = pki_dir / f"{H49}.key", pki_dir / f"{H49}.crt"
    return main(
        ["sign", str(source), "--key", str(key), "--cert", str(cert), "-o", str(out), *extra]
    )


@pytest.fixture
def pki_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    """A folder made by `lienthong pki init` with two agencies and a broker."""
    folder = tmp_path / "pki"
    assert (
        main(["pki", "init", str(folder), "--ca", "Dev CA", "--agency", H49, H50, "--broker", "mq"])
        == 0
    )
    capsys.readouterr()
    return folder


def test_pki_init_writes_keys_private_and_warns(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """pki init writes CA, agency and broker pairs, keys 0600, and says it is for development."""
    folder = tmp_path / "pki"
    assert main(["pki", "init", str(folder), "--agency", H49, "--broker", "mq"]) == 0
    assert "DEVELOPMENT certificate authority, not for production" in capsys.readouterr().out
    names = sorted(p.name for p in folder.iterdir())
    assert names == sorted(["ca.crt", "ca.key", f"{H49}.crt", f"{H49}.key", "mq.crt", "mq.key"])
    for key in folder.glob("*.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    broker = pki.CertifiedKey.from_pem(
        (folder / "mq.key").read_bytes(), (folder / "mq.crt").read_bytes()
    )
    assert broker.name == "mq"


def test_pki_init_again_keeps_keys_and_adds_agencies(
    pki_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Re-running reuses the CA, keeps existing keys and adds the missing agency."""
    before = {p.name: p.read_bytes() for p in pki_dir.iterdir()}
    assert main(["pki", "init", str(pki_dir), "--agency", H49, "000.00.00.H49"]) == 0
    out = capsys.readouterr().out
    assert f"kept   {pki_dir / 'ca.crt'} (Dev CA)" in out
    after = {p.name: p.read_bytes() for p in pki_dir.iterdir()}
    assert {k: after[k] for k in before} == before
    new = pki.CertifiedKey.from_pem(after["000.00.00.H49.key"], after["000.00.00.H49.crt"])
    ca = pki.CertifiedKey.from_pem(after["ca.key"], after["ca.crt"])
    new.certificate.verify_directly_issued_by(ca.certificate)


def test_pki_init_refuses_a_malformed_agency_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed agency code is a configuration error (exit 2) and nothing is written."""
    assert main(["pki", "init", str(tmp_path / "p"), "--agency", "000.0.12.H49"]) == 2
    assert "--agency 000.0.12.H49" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_sign_then_verify_exit_zero(
    pki_dir: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """sign -o writes a package that verify accepts with exit 0."""
    out = tmp_path / "signed.xml"
    assert _sign_as(pki_dir, data_dir / "trust" / "edoc.xml", out) == 0
    assert main(["verify", str(out), "--trust", str(pki_dir / "ca.crt")]) == 0
    assert f"valid, signed by CN={H49} for {H49}" in capsys.readouterr().out


def test_verify_prints_reasons_and_exits_one(
    pki_dir: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A package signed by the wrong agency, and an unsigned one, give exit 1 and reasons."""
    out = tmp_path / "signed.xml"
    assert _sign_as(pki_dir, data_dir / "trust" / "edoc_h50.xml", out) == 0
    unsigned = data_dir / "trust" / "status.xml"
    assert main(["verify", str(out), str(unsigned), "--trust", str(pki_dir / "ca.crt")]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines == [
        f"{out}: REFUSED",
        f"  certificate CN={H49} may not sign for {H50}",
        f"{unsigned}: REFUSED",
        "  the package is not signed",
    ]


def test_verify_with_crl_reports_revocation(
    pki_dir: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--crl makes a revoked signer's package fail with the revocation reason."""
    signer = pki.CertifiedKey.from_pem(
        (pki_dir / f"{H49}.key").read_bytes(), (pki_dir / f"{H49}.crt").read_bytes()
    )
    ca = pki.CertifiedKey.from_pem(
        (pki_dir / "ca.key").read_bytes(), (pki_dir / "ca.crt").read_bytes()
    )
    crl = tmp_path / "ca.crl"
    crl.write_bytes(pki.make_crl(ca, [signer.certificate.serial_number]).public_bytes(Encoding.DER))
    out = tmp_path / "signed.xml"
    assert _sign_as(pki_dir, data_dir / "trust" / "edoc.xml", out) == 0
    assert main(["verify", str(out), "--trust", str(pki_dir / "ca.crt"), "--crl", str(crl)]) == 1
    assert f"the signing certificate CN={H49} was revoked on" in capsys.readouterr().out


def test_verify_refuses_a_leaf_in_the_trust_folder(
    pki_dir: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A trust folder holding a non-CA certificate is a configuration error naming the file."""
    assert main(["verify", str(data_dir / "trust" / "edoc.xml"), "--trust", str(pki_dir)]) == 2
    assert "is not a CA certificate" in capsys.readouterr().err


def test_sign_refuses_signed_package_without_replace(
    pki_dir: Path, data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Signing a signed package exits 1 with a clear error; --replace re-signs it."""
    once, twice = tmp_path / "once.xml", tmp_path / "twice.xml"
    assert _sign_as(pki_dir, data_dir / "trust" / "edoc.xml", once) == 0
    assert _sign_as(pki_dir, once, twice) == 1
    assert "already signed" in capsys.readouterr().err
    assert _sign_as(pki_dir, once, twice, "--replace") == 0
    assert main(["verify", str(twice), "--trust", str(pki_dir / "ca.crt")]) == 0


def _encrypted_pair(tmp_path: Path, passphrase: bytes) -> tuple[Path, Path, Path]:
    ca = pki.make_ca("Dev CA")
    agency = pki.issue_agency(ca, H49, key_type="ec")
    key, cert, ca_crt = tmp_path / "a.key", tmp_path / "a.crt", tmp_path / "ca.crt"
    key.write_bytes(agency.key_pem(passphrase))
    cert.write_bytes(agency.cert_pem())
    ca_crt.write_bytes(ca.cert_pem())
    return key, cert, ca_crt


def test_encrypted_key_with_passphrase_file(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An encrypted EC key signs with --passphrase-file (trailing newline ignored), to stdout."""
    key, cert, ca_crt = _encrypted_pair(tmp_path, b"m\xe1\xba\xadt kh\xe1\xba\xa9u")
    (tmp_path / "pass").write_bytes(b"m\xe1\xba\xadt kh\xe1\xba\xa9u\n")
    args = ["sign", str(data_dir / "trust" / "edoc.xml"), "--key", str(key), "--cert", str(cert)]
    assert main([*args, "--passphrase-file", str(tmp_path / "pass")]) == 0
    signed = capsys.readouterr().out
    assert "ecdsa-sha256" in signed
    (tmp_path / "s.xml").write_text(signed, encoding="utf-8")
    assert main(["verify", str(tmp_path / "s.xml"), "--trust", str(ca_crt)]) == 0


def test_encrypted_key_with_passphrase_env(
    data_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """--passphrase-env reads the variable; a wrong or missing one is a configuration error."""
    key, cert, _ = _encrypted_pair(tmp_path, b"s3cret")
    args = [
        "sign",
        str(data_dir / "trust" / "edoc.xml"),
        "--key",
        str(key),
        "--cert",
        str(cert),
        "-o",
        str(tmp_path / "o.xml"),
    ]
    monkeypatch.setenv("LT_PASS", "s3cret")
    assert main([*args, "--passphrase-env", "LT_PASS"]) == 0
    monkeypatch.setenv("LT_PASS", "wrong")
    assert main([*args, "--passphrase-env", "LT_PASS"]) == 2
    assert "passphrase does not decrypt the private key" in capsys.readouterr().err
    assert main([*args, "--passphrase-env", "LT_UNSET"]) == 2
    assert "LT_UNSET" in capsys.readouterr().err
    assert main(args) == 2
    assert "encrypted: give its passphrase" in capsys.readouterr().err


def test_keyfiles_errors_name_the_file(tmp_path: Path) -> None:
    """Missing files, empty trust folders and unreadable CRLs raise ConfigError naming them."""
    with pytest.raises(ConfigError, match=r"cannot read the private key .*nope\.key"):
        keyfiles.load_identity(tmp_path / "nope.key", tmp_path / "nope.crt")
    with pytest.raises(ConfigError, match=r"holds no \.crt or \.pem file"):
        keyfiles.load_trust_store([tmp_path])
    ca = pki.make_ca("Dev CA")
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    (tmp_path / "bad.crl").write_bytes(b"not a crl")
    with pytest.raises(ConfigError, match=r"bad\.crl: not a readable CRL"):
        keyfiles.load_trust_store([tmp_path], [tmp_path / "bad.crl"])
    assert keyfiles.load_trust_store([tmp_path]).anchors == (ca.certificate,)
