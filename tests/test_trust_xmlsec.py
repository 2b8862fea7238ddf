"""Interoperability with the xmlsec1 reference implementation, SHA-1 and namespace variants."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from lienthong.trust import pki
from lienthong.trust.keys import SigningIdentity
from lienthong.trust.sign import sign_package
from lienthong.trust.truststore import TrustStore
from lienthong.trust.verify import CHANGED, VerifyPolicy, verify_package

pytestmark = pytest.mark.skipif(shutil.which("xmlsec1") is None, reason="xmlsec1 not installed")

DSIG = "http://www.w3.org/2000/09/xmldsig#"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
TEMPLATE = """
    <Signature xmlns="{ns}">
      <SignedInfo>
        <CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
        <SignatureMethod Algorithm="{method}"/>
        <Reference URI="">
          <Transforms>
            <Transform Algorithm="http://www.w3.org/2000/09/xmldsig#enveloped-signature"/>
            <Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
          </Transforms>
          <DigestMethod Algorithm="{digest}"/>
          <DigestValue/>
        </Reference>
      </SignedInfo>
      <SignatureValue/>
      <KeyInfo><X509Data><X509Certificate/></X509Data></KeyInfo>
    </Signature>"""
TRACE_END = b"</edXML:TraceHeaderList>"
Pair = tuple[Path, pki.CertifiedKey, pki.CertifiedKey]


@pytest.fixture(scope="module")
def pair(
    tmp_path_factory: pytest.TempPathFactory,
) -> Pair:
    """A folder with ca.crt, agency.key and agency.crt for 000.00.12.H49."""
    folder = tmp_path_factory.mktemp("xmlsec")
    ca = pki.make_ca("Interop CA")
    agency = pki.issue_agency(ca, "000.00.12.H49")
    (folder / "ca.crt").write_bytes(ca.cert_pem())
    (folder / "agency.key").write_bytes(agency.key_pem())
    (folder / "agency.crt").write_bytes(agency.cert_pem())
    return folder, ca, agency


def _xmlsec(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["xmlsec1", *map(str, args)], capture_output=True, text=True, timeout=60)


def _xmlsec_sign(
    folder: Path, package: bytes, method: str = RSA_SHA256, digest: str = SHA256
) -> bytes:
    template = TEMPLATE.format(ns=DSIG, method=method, digest=digest).encode()
    assert TRACE_END in package
    (folder / "template.xml").write_bytes(package.replace(TRACE_END, TRACE_END + template))
    key = f"{folder / 'agency.key'},{folder / 'agency.crt'}"
    done = _xmlsec(
        "--sign", "--privkey-pem", key, "--output", folder / "out.xml", folder / "template.xml"
    )
    assert done.returncode == 0, done.stderr
    return (folder / "out.xml").read_bytes()


@pytest.mark.parametrize("sample", ["edoc.xml", "status.xml"])
def test_xmlsec1_verifies_what_lienthong_signs(pair: Pair, data_dir: Path, sample: str) -> None:
    """xmlsec1 accepts our signature against the CA, and rejects it once the package changes."""
    folder, _, agency = pair
    signed = sign_package(
        (data_dir / "trust" / sample).read_bytes(),
        SigningIdentity(agency.key, agency.certificate),
    )
    (folder / "signed.xml").write_bytes(signed)
    done = _xmlsec("--verify", "--trusted-pem", folder / "ca.crt", folder / "signed.xml")
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stderr
    tampered = signed.replace("Quảng Nam".encode(), "Quảng Ngãi".encode(), 1)
    assert tampered != signed
    (folder / "tampered.xml").write_bytes(tampered)
    refused = _xmlsec("--verify", "--trusted-pem", folder / "ca.crt", folder / "tampered.xml")
    assert refused.returncode != 0


def test_lienthong_verifies_what_xmlsec1_signs(pair: Pair, data_dir: Path) -> None:
    """A package signed by xmlsec1 from a template verifies, and tampering is detected."""
    folder, ca, _ = pair
    signed = _xmlsec_sign(folder, (data_dir / "trust" / "edoc.xml").read_bytes())
    trust = TrustStore((ca.certificate,))
    result = verify_package(signed, trust)
    assert result.valid, result.reasons
    assert result.sender == "000.00.12.H49"
    changed = verify_package(signed.replace(b"Tam K", b"Tam X"), trust)
    assert changed.reasons == (CHANGED,)


def test_signature_in_edxml_namespace_is_accepted(pair: Pair, data_dir: Path) -> None:
    """A Signature written in the edXML default namespace (no DSig declaration) verifies."""
    folder, ca, _ = pair
    signed = _xmlsec_sign(folder, (data_dir / "trust" / "edoc.xml").read_bytes())
    declaration = f' xmlns="{DSIG}"'.encode()
    assert signed.count(declaration) == 1
    in_edxml_ns = signed.replace(declaration, b"")
    trust = TrustStore((ca.certificate,))
    result = verify_package(in_edxml_ns, trust)
    assert result.valid, result.reasons
    tampered = verify_package(in_edxml_ns.replace(b"Tam K", b"Tam X"), trust)
    assert tampered.reasons == (CHANGED,)


def test_sha1_refused_by_default_and_weak_when_allowed(pair: Pair, data_dir: Path) -> None:
    """RSA-SHA1 is refused unless allow_sha1, and then accepted as weak with a reason."""
    folder, ca, _ = pair
    signed = _xmlsec_sign(folder, (data_dir / "trust" / "edoc.xml").read_bytes(), RSA_SHA1, SHA1)
    trust = TrustStore((ca.certificate,))
    refused = verify_package(signed, trust)
    assert not refused.valid
    assert refused.weak
    assert refused.reasons == (
        "the package is signed with a SHA-1 algorithm (rsa-sha1, digest sha1), which is too"
        " weak and refused",
    )
    allowed = verify_package(signed, trust, policy=VerifyPolicy(allow_sha1=True))
    assert allowed.valid
    assert allowed.weak
    assert allowed.reasons == (
        "the signature uses SHA-1 (rsa-sha1, digest sha1), a weak algorithm accepted by policy",
    )


def test_sha1_digest_alone_is_weak(pair: Pair, data_dir: Path) -> None:
    """An RSA-SHA256 signature over a SHA-1 digest is refused by default as well."""
    folder, ca, _ = pair
    signed = _xmlsec_sign(folder, (data_dir / "trust" / "edoc.xml").read_bytes(), RSA_SHA256, SHA1)
    result = verify_package(signed, TrustStore((ca.certificate,)))
    assert not result.valid
    assert "digest sha1" in result.reasons[0]
