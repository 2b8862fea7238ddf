"""Signing and verifying edXML packages: round trips and every refusal with its reason."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from lienthong.devnet.pki import DevPki
from lienthong.errors import ConfigError
from lienthong.keyfiles import load_identity
from lienthong.trust import pki
from lienthong.trust.keys import SigningIdentity
from lienthong.trust.sign import AlreadySigned, sign_package
from lienthong.trust.truststore import TrustStore
from lienthong.trust.verify import CHANGED, Verification, verify_package
from lienthong.xmlsafe import parse_xml

DS = "http://www.w3.org/2000/09/xmldsig#"
H49 = "000.00.12.H49"
H50 = "000.00.12.H50"


@pytest.fixture(scope="module")
def ca() -> pki.CertifiedKey:
    """The trusted CA."""
    return pki.make_ca("Test CA")


@pytest.fixture(scope="module")
def trust(ca: pki.CertifiedKey) -> TrustStore:
    """A trust store holding only the test CA."""
    return TrustStore((ca.certificate,))


@pytest.fixture(scope="module")
def h49(ca: pki.CertifiedKey) -> SigningIdentity:
    """The signing identity of agency 000.00.12.H49."""
    issued = pki.issue_agency(ca, H49)
    return SigningIdentity(issued.key, issued.certificate)


@pytest.fixture
def edoc(data_dir: Path) -> bytes:
    """An unsigned document package from 000.00.12.H49."""
    return (data_dir / "trust" / "edoc.xml").read_bytes()


@pytest.fixture
def signed(edoc: bytes, h49: SigningIdentity) -> bytes:
    """The document package signed by 000.00.12.H49."""
    return sign_package(edoc, h49)


def _refused_for(result: Verification, text: str) -> None:
    assert not result.valid
    assert any(text in reason for reason in result.reasons), result.reasons


def test_round_trip_names_sender_signer_and_chain(signed: bytes, trust: TrustStore) -> None:
    """A package signed by an agency verifies, naming the signed sender and the chain."""
    result = verify_package(signed, trust)
    assert result.valid, result.reasons
    assert result.sender == H49
    assert result.signer_subject == f"CN={H49}"
    assert result.chain == (f"CN={H49}", "CN=Test CA")
    assert result.algorithm == "rsa-sha256"
    assert not result.weak
    assert result.reasons == ()


def test_signature_sits_after_trace_list_with_whole_document_reference(signed: bytes) -> None:
    """The ds:Signature is in edXMLHeader right after TraceHeaderList, URI="" and exc-c14n."""
    root = parse_xml(signed)
    sig = root.find(f".//{{{DS}}}Signature")
    assert sig is not None
    assert sig.prefix == "ds"
    previous = sig.getprevious()
    assert previous is not None
    assert etree.QName(previous).localname == "TraceHeaderList"
    parent = sig.getparent()
    assert parent is not None
    assert etree.QName(parent).localname == "edXMLHeader"
    ns = {"ds": DS}
    assert sig.xpath("ds:SignedInfo/ds:Reference/@URI", namespaces=ns) == [""]
    assert sig.xpath("ds:SignedInfo/ds:CanonicalizationMethod/@Algorithm", namespaces=ns) == [
        "http://www.w3.org/2001/10/xml-exc-c14n#"
    ]
    assert len(sig.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", ns)) == 1


def test_status_package_round_trip(data_dir: Path, ca: pki.CertifiedKey, trust: TrustStore) -> None:
    """An unprefixed status package signed by its reporting agency verifies."""
    issued = pki.issue_agency(ca, "000.00.00.H49")
    data = (data_dir / "trust" / "status.xml").read_bytes()
    result = verify_package(
        sign_package(data, SigningIdentity(issued.key, issued.certificate)), trust
    )
    assert result.valid, result.reasons
    assert result.sender == "000.00.00.H49"


def test_ecdsa_p256_round_trip(edoc: bytes, ca: pki.CertifiedKey, trust: TrustStore) -> None:
    """An EC P-256 agency key signs with ECDSA-SHA256 and the package verifies."""
    issued = pki.issue_agency(ca, H49, key_type="ec")
    signed = sign_package(
        edoc, SigningIdentity(issued.key, issued.certificate), algorithm="ecdsa-sha256"
    )
    result = verify_package(signed, trust)
    assert result.valid, result.reasons
    assert result.algorithm == "ecdsa-sha256"


def test_algorithm_must_fit_the_key(edoc: bytes, h49: SigningIdentity) -> None:
    """An ECDSA algorithm with an RSA key, or an unknown one, is a clear error."""
    with pytest.raises(ValueError, match="does not fit the RSA key"):
        sign_package(edoc, h49, algorithm="ecdsa-sha256")
    with pytest.raises(ValueError, match="unknown signature algorithm"):
        sign_package(edoc, h49, algorithm="rsa-md5")


def test_signing_a_signed_package_needs_replace(
    signed: bytes, ca: pki.CertifiedKey, trust: TrustStore
) -> None:
    """Re-signing is refused unless replace=True, which leaves exactly one new signature."""
    other = pki.issue_agency(ca, H49)
    identity = SigningIdentity(other.key, other.certificate)
    with pytest.raises(AlreadySigned, match="already signed"):
        sign_package(signed, identity)
    resigned = sign_package(signed, identity, replace=True)
    assert len(parse_xml(resigned).findall(f".//{{{DS}}}Signature")) == 1
    result = verify_package(resigned, trust)
    assert result.valid, result.reasons
    assert result.signer == other.certificate


def test_one_byte_of_subject_changed(signed: bytes, trust: TrustStore) -> None:
    """Changing one letter of the Subject breaks the digest."""
    tampered = signed.replace(b"V/v b\xc3\xa1o", b"V/v c\xc3\xa1o")
    assert tampered != signed
    _refused_for(verify_package(tampered, trust), CHANGED)


def test_attachment_base64_changed(signed: bytes, trust: TrustStore) -> None:
    """Changing the attachment's base64 breaks the digest."""
    tampered = signed.replace(b"JVBERi0xLjQK", b"JVBERi0xLjUK")
    assert tampered != signed
    _refused_for(verify_package(tampered, trust), CHANGED)


def test_signature_moved_to_another_package(
    signed: bytes, data_dir: Path, trust: TrustStore
) -> None:
    """A valid signature copied into another agency's package does not match its content."""
    signature = parse_xml(signed).find(f".//{{{DS}}}Signature")
    assert signature is not None
    target = parse_xml((data_dir / "trust" / "edoc_h50.xml").read_bytes())
    trace = target.find(".//{*}TraceHeaderList")
    assert trace is not None
    trace.addnext(signature)
    moved = etree.tostring(target, xml_declaration=True, encoding="UTF-8")
    _refused_for(verify_package(moved, trust), CHANGED)


def test_certificate_from_another_ca(edoc: bytes, trust: TrustStore) -> None:
    """A certificate issued by an untrusted CA is refused, naming its issuer."""
    rogue_ca = pki.make_ca("Rogue CA")
    rogue = pki.issue_agency(rogue_ca, H49)
    signed = sign_package(edoc, SigningIdentity(rogue.key, rogue.certificate))
    _refused_for(
        verify_package(signed, trust),
        f"the signing certificate CN={H49} was not issued by a trusted CA"
        " (its issuer is CN=Rogue CA)",
    )


def test_expired_certificate_is_refused_now_but_valid_when_received(
    edoc: bytes, ca: pki.CertifiedKey, trust: TrustStore
) -> None:
    """An expired certificate is refused at the current time, accepted at a time it was valid."""
    old = pki.issue_agency(
        ca,
        H49,
        not_before=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
        not_after=dt.datetime(2021, 1, 1, tzinfo=dt.UTC),
    )
    signed = sign_package(edoc, SigningIdentity(old.key, old.certificate))
    _refused_for(
        verify_package(signed, trust),
        f"the signing certificate CN={H49} expired on 2021-01-01 00:00 UTC",
    )
    received = dt.datetime(2020, 6, 1, tzinfo=dt.UTC)
    # The CA was made today, so only the CA's own date is wrong at that time.
    reasons = verify_package(signed, trust, at=received).reasons
    assert reasons == (
        "the CA certificate CN=Test CA is not valid before "
        f"{ca.certificate.not_valid_before_utc:%Y-%m-%d %H:%M} UTC",
    )


def test_revoked_certificate(edoc: bytes, ca: pki.CertifiedKey) -> None:
    """A certificate on the CA's CRL is refused with the revocation date; later revocations not."""
    issued = pki.issue_agency(ca, H49)
    signed = sign_package(edoc, SigningIdentity(issued.key, issued.certificate))
    # between the certificate's start (five minutes ago) and now
    when = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=1)
    crl = pki.make_crl(ca, {issued.certificate.serial_number: when})
    store = TrustStore((ca.certificate,), (crl,))
    _refused_for(verify_package(signed, store), f"was revoked on {when:%Y-%m-%d %H:%M} UTC")
    before = verify_package(signed, store, at=when - dt.timedelta(minutes=2))
    assert before.valid, before.reasons


def test_crl_not_signed_by_its_ca_is_a_configuration_error(ca: pki.CertifiedKey) -> None:
    """A CRL claiming a trusted CA as issuer but signed by another key is refused on load."""
    impostor = pki.make_ca("Test CA")
    crl = pki.make_crl(impostor, [1])
    with pytest.raises(ConfigError, match="does not carry that CA's signature"):
        TrustStore((ca.certificate,), (crl,))


def test_agency_a_may_not_sign_for_agency_b(
    data_dir: Path, h49: SigningIdentity, trust: TrustStore
) -> None:
    """A valid certificate of one agency on a package from another is refused."""
    signed = sign_package((data_dir / "trust" / "edoc_h50.xml").read_bytes(), h49)
    result = verify_package(signed, trust)
    _refused_for(result, f"certificate CN={H49} may not sign for {H50}")
    assert result.sender == H50


def test_custom_binding_decides(data_dir: Path, h49: SigningIdentity, trust: TrustStore) -> None:
    """A signer_binding callable (e.g. the directory) overrides the CN rule."""
    signed = sign_package((data_dir / "trust" / "edoc_h50.xml").read_bytes(), h49)
    seen: list[tuple[str, x509.Certificate]] = []

    def parent_may_sign(sender: str, cert: x509.Certificate) -> bool:
        seen.append((sender, cert))
        return True

    result = verify_package(signed, trust, signer_binding=parent_may_sign)
    assert result.valid, result.reasons
    assert seen == [(H50, h49.certificate)]


def test_wrapping_with_second_message_header(signed: bytes, trust: TrustStore) -> None:
    """A second, unsigned MessageHeader added to a signed package is refused as wrapping."""
    root = parse_xml(signed)
    header = root.find(".//{*}MessageHeader")
    assert header is not None
    forged = etree.fromstring(etree.tostring(header).replace(H49.encode(), H50.encode()))
    envelope = root.find("{*}edXMLEnvelope")
    assert envelope is not None
    envelope.insert(0, forged)
    wrapped = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    result = verify_package(wrapped, trust)
    _refused_for(result, "holds 2 MessageHeader elements where exactly one is allowed")
    assert result.sender is None


def test_two_signatures_are_refused(signed: bytes, trust: TrustStore) -> None:
    """A package carrying two Signature elements is refused."""
    root = parse_xml(signed)
    sig = root.find(f".//{{{DS}}}Signature")
    assert sig is not None
    sig.addnext(etree.fromstring(etree.tostring(sig)))
    doubled = etree.tostring(root, encoding="UTF-8")
    _refused_for(verify_package(doubled, trust), "holds 2 signatures where exactly one is allowed")


def test_reference_must_be_the_whole_document(signed: bytes, trust: TrustStore) -> None:
    """A Reference URI other than "" is refused before anything else is checked."""
    moved = signed.replace(b'<ds:Reference URI="">', b'<ds:Reference URI="#body">')
    _refused_for(
        verify_package(moved, trust),
        "one Reference with URI=\"\"), but it has 1 reference(s): '#body'",
    )


def test_unsigned_and_malformed_input_give_reasons(edoc: bytes, trust: TrustStore) -> None:
    """Unsigned, empty and DOCTYPE-carrying inputs are results with reasons, not exceptions."""
    _refused_for(verify_package(edoc, trust), "the package is not signed")
    _refused_for(verify_package(b"", trust), "the package is empty")
    _refused_for(verify_package(b"<!DOCTYPE x><x/>", trust), "DOCTYPE")


def test_intermediate_ca_carried_in_keyinfo(
    edoc: bytes, ca: pki.CertifiedKey, trust: TrustStore
) -> None:
    """A signer issued by a sub-CA verifies when the sub-CA rides in KeyInfo, not without it."""
    sub = pki.make_ca("Sub CA", parent=ca)
    issued = pki.issue_agency(sub, H49)
    with_chain = sign_package(
        edoc, SigningIdentity(issued.key, issued.certificate, (sub.certificate,))
    )
    result = verify_package(with_chain, trust)
    assert result.valid, result.reasons
    assert result.chain == (f"CN={H49}", "CN=Sub CA", "CN=Test CA")
    alone = sign_package(edoc, SigningIdentity(issued.key, issued.certificate))
    _refused_for(verify_package(alone, trust), "its issuer is CN=Sub CA")


def test_leaf_certificate_cannot_be_a_trust_anchor(ca: pki.CertifiedKey) -> None:
    """A trust store refuses a non-CA certificate as anchor."""
    leaf = pki.issue_agency(ca, H49).certificate
    with pytest.raises(ConfigError, match="is not a CA certificate"):
        TrustStore((leaf,))


def test_identity_key_must_match_certificate(ca: pki.CertifiedKey) -> None:
    """A SigningIdentity whose key does not belong to its certificate is refused."""
    a = pki.issue_agency(ca, H49)
    b = pki.issue_agency(ca, H50)
    with pytest.raises(ConfigError, match="does not belong to the certificate"):
        SigningIdentity(a.key, b.certificate)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.data())
def test_mutated_packages_never_raise(
    signed: bytes, trust: TrustStore, data: st.DataObject
) -> None:
    """Any byte changed, cut or inserted gives a Verification, never an exception."""
    pos = data.draw(st.integers(0, len(signed) - 1))
    kind = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    if kind == "flip":
        mutated = (
            signed[:pos] + bytes([signed[pos] ^ data.draw(st.integers(1, 255))]) + signed[pos + 1 :]
        )
    elif kind == "cut":
        mutated = signed[:pos]
    else:
        mutated = signed[:pos] + data.draw(st.binary(min_size=1, max_size=8)) + signed[pos:]
    result = verify_package(mutated, trust)
    assert isinstance(result, Verification)
    assert result.valid == (not result.reasons) or result.weak


def test_ec_identity_signs_with_ecdsa_by_default(tmp_path: Path) -> None:
    """An EC agency key needs no algorithm named: ECDSA-SHA256 is chosen and verifies."""
    pki = DevPki(tmp_path / "pki", key_type="ec")
    cert, key = pki.client_files("000.00.12.H49")
    data = (Path(__file__).parent / "data" / "trust" / "edoc.xml").read_bytes()
    signed = sign_package(data, load_identity(key, cert))
    result = verify_package(signed, TrustStore.from_pem([pki.cafile.read_bytes()]))
    assert result.valid, result.reasons
    assert "ecdsa" in result.algorithm
