"""The development PKI: CA, agency, broker and client certificates, CRLs."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from pathlib import Path
from typing import TypeVar

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from lienthong.trust import pki


@pytest.fixture(scope="module")
def ca() -> pki.CertifiedKey:
    """One CA for the module."""
    return pki.make_ca("Test CA")


E = TypeVar("E", bound=x509.ExtensionType)


def _ext(cert: x509.Certificate, kind: type[E]) -> E:
    return cert.extensions.get_extension_for_class(kind).value


def test_ca_is_self_signed_ca_with_cert_sign(ca: pki.CertifiedKey) -> None:
    """The CA certificate is self-signed, basicConstraints CA, may sign certificates and CRLs."""
    cert = ca.certificate
    cert.verify_directly_issued_by(cert)
    assert _ext(cert, x509.BasicConstraints) == x509.BasicConstraints(ca=True, path_length=None)
    usage = _ext(cert, x509.KeyUsage)
    assert usage.key_cert_sign
    assert usage.crl_sign
    assert isinstance(ca.key, rsa.RSAPrivateKey)
    assert ca.key.key_size == 2048
    assert ca.name == "Test CA"


def test_agency_cert_signs_and_authenticates(ca: pki.CertifiedKey) -> None:
    """An agency certificate has CN = code, digitalSignature+nonRepudiation and clientAuth."""
    agency = pki.issue_agency(ca, "000.00.12.H49")
    cert = agency.certificate
    cert.verify_directly_issued_by(ca.certificate)
    assert agency.name == "000.00.12.H49"
    usage = _ext(cert, x509.KeyUsage)
    assert usage.digital_signature
    assert usage.content_commitment
    assert not usage.key_cert_sign
    assert list(_ext(cert, x509.ExtendedKeyUsage)) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert _ext(cert, x509.BasicConstraints) == x509.BasicConstraints(ca=False, path_length=None)


def test_client_cert_is_an_agency_cert(ca: pki.CertifiedKey) -> None:
    """issue_client gives the same kind of certificate: the node code as CN, clientAuth."""
    client = pki.issue_client(ca, "000.00.00.H49", key_type="ec")
    assert client.name == "000.00.00.H49"
    assert isinstance(client.key, ec.EllipticCurvePrivateKey)
    assert isinstance(client.key.curve, ec.SECP256R1)
    eku = _ext(client.certificate, x509.ExtendedKeyUsage)
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku


def test_server_cert_has_sans_and_server_and_client_auth(ca: pki.CertifiedKey) -> None:
    """A broker certificate carries DNS and IP SANs, serverAuth and clientAuth (cluster routes)."""
    server = pki.issue_server(ca, "broker", hosts=("localhost", "127.0.0.1", "mq.example.vn"))
    san = _ext(server.certificate, x509.SubjectAlternativeName)
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "mq.example.vn"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    eku = _ext(server.certificate, x509.ExtendedKeyUsage)
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]


def test_server_and_client_certs_load_into_ssl_contexts(
    ca: pki.CertifiedKey, tmp_path: Path
) -> None:
    """The PEM output is accepted by Python's ssl module as a server and a client identity."""
    server = pki.issue_server(ca, "broker")
    client = pki.issue_agency(ca, "000.00.12.H49")
    for stem, pair in (("server", server), ("client", client)):
        (tmp_path / f"{stem}.crt").write_bytes(pair.cert_pem())
        (tmp_path / f"{stem}.key").write_bytes(pair.key_pem(b"pw"))
    (tmp_path / "ca.crt").write_bytes(ca.cert_pem())
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=tmp_path / "ca.crt")
    server_ctx.load_cert_chain(tmp_path / "server.crt", tmp_path / "server.key", password=b"pw")
    client_ctx = ssl.create_default_context(cafile=tmp_path / "ca.crt")
    client_ctx.load_cert_chain(tmp_path / "client.crt", tmp_path / "client.key", password=b"pw")
    assert server_ctx.cert_store_stats()["x509_ca"] == 1


def test_validity_window_can_be_set_in_the_past(ca: pki.CertifiedKey) -> None:
    """not_before/not_after make expired certificates for tests."""
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    end = dt.datetime(2021, 1, 1, tzinfo=dt.UTC)
    old = pki.issue_agency(ca, "000.00.12.H49", not_before=start, not_after=end)
    assert old.certificate.not_valid_before_utc == start
    assert old.certificate.not_valid_after_utc == end
    with pytest.raises(ValueError, match="later than not_before"):
        pki.issue_agency(ca, "000.00.12.H49", not_before=end, not_after=start)


def test_intermediate_ca_chains_to_its_parent(ca: pki.CertifiedKey) -> None:
    """make_ca with a parent gives a sub-CA issued by that parent, path length 0."""
    sub = pki.make_ca("Sub CA", parent=ca, key_type="ec")
    sub.certificate.verify_directly_issued_by(ca.certificate)
    assert _ext(sub.certificate, x509.BasicConstraints) == x509.BasicConstraints(
        ca=True, path_length=0
    )


def test_crl_lists_serials_with_dates_and_is_signed(ca: pki.CertifiedKey) -> None:
    """make_crl signs a CRL listing each serial with its revocation date."""
    when = dt.datetime(2025, 3, 1, tzinfo=dt.UTC)
    crl = pki.make_crl(ca, {7: when, 9: when + dt.timedelta(days=1)})
    assert isinstance(ca.key, rsa.RSAPrivateKey)
    assert crl.is_signature_valid(ca.key.public_key())
    entry = crl.get_revoked_certificate_by_serial_number(7)
    assert entry is not None
    assert entry.revocation_date_utc == when
    assert crl.get_revoked_certificate_by_serial_number(8) is None
    plain = pki.make_crl(ca, [11], revoked_at=when)
    listed = plain.get_revoked_certificate_by_serial_number(11)
    assert listed is not None
    assert listed.revocation_date_utc == when


def test_pem_round_trip_with_passphrase(ca: pki.CertifiedKey) -> None:
    """key_pem/cert_pem with a passphrase load back into an equal pair."""
    again = pki.CertifiedKey.from_pem(ca.key_pem(b"secret"), ca.cert_pem(), b"secret")
    assert again.certificate == ca.certificate
    assert b"ENCRYPTED" in ca.key_pem(b"secret")


def test_unknown_key_type_is_refused() -> None:
    """Only rsa and ec keys are made."""
    with pytest.raises(ValueError, match="unknown key type"):
        pki.new_key("dsa")  # type: ignore[arg-type]
