"""Streaming sign and verify: interoperable with xmlsec1 and signxml, refusing what they refuse."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from test_trust_xmlsec import DSIG, RSA_SHA1, RSA_SHA256, SHA1, SHA256, TEMPLATE, TRACE_END

from lienthong.devnet.bigpackage import write_large_package
from lienthong.errors import PeerInputError, XmlRefused
from lienthong.trust import pki
from lienthong.trust.keys import SigningIdentity
from lienthong.trust.sign import AlreadySigned, sign_package
from lienthong.trust.stream import DIGEST_BUFFER, sign_file, verify_file
from lienthong.trust.truststore import TrustStore
from lienthong.trust.verify import CHANGED, Verification, VerifyPolicy, verify_package

DATA = Path(__file__).parent / "data"
EDOC = DATA / "trust" / "edoc.xml"
H49 = "000.00.12.H49"
SHA512 = "http://www.w3.org/2001/04/xmlenc#sha512"
needs_xmlsec = pytest.mark.skipif(shutil.which("xmlsec1") is None, reason="xmlsec1 not installed")


class Keys:
    """A CA, its trust store, and agency H49's key and certificate as objects and files."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.ca = pki.make_ca("Stream CA")
        self.agency = pki.issue_agency(self.ca, H49)
        self.identity = SigningIdentity(self.agency.key, self.agency.certificate)
        self.trust = TrustStore((self.ca.certificate,))
        (folder / "ca.crt").write_bytes(self.ca.cert_pem())
        (folder / "agency.key").write_bytes(self.agency.key_pem())
        (folder / "agency.crt").write_bytes(self.agency.cert_pem())


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    """Keys and certificates for the module, with PEM files for xmlsec1."""
    return Keys(tmp_path_factory.mktemp("stream-keys"))


def xmlsec(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """Run xmlsec1."""
    return subprocess.run(["xmlsec1", *map(str, args)], capture_output=True, text=True, timeout=120)


def xmlsec_verifies(keys: Keys, path: Path) -> bool:
    """True when ``xmlsec1 --verify`` accepts the file against the CA."""
    done = xmlsec("--verify", "--trusted-pem", keys.folder / "ca.crt", path)
    return done.returncode == 0


def xmlsec_sign(
    keys: Keys,
    package: bytes,
    out: Path,
    *,
    at_end: bool = False,
    digest: str = SHA256,
    method: str = RSA_SHA256,
    ns: str = DSIG,
) -> Path:
    """Sign ``package`` with xmlsec1 from a template after TraceHeaderList, or at the end."""
    template = TEMPLATE.format(ns=ns, method=method, digest=digest).encode()
    if at_end:
        cut = package.rindex(b"</")
        package = package[:cut] + template + package[cut:]
    else:
        package = package.replace(TRACE_END, TRACE_END + template)
    (out.parent / "template.xml").write_bytes(package)
    key = f"{keys.folder / 'agency.key'},{keys.folder / 'agency.crt'}"
    done = xmlsec("--sign", "--privkey-pem", key, "--output", out, out.parent / "template.xml")
    assert done.returncode == 0, done.stderr
    return out


def both(keys: Keys, path: Path, **kwargs: object) -> tuple[Verification, Verification]:
    """The tree verifier's and the streaming verifier's results for the file."""
    return (
        verify_package(path.read_bytes(), keys.trust, **kwargs),  # type: ignore[arg-type]
        verify_file(path, keys.trust, **kwargs),  # type: ignore[arg-type]
    )


def assert_valid(*results: Verification) -> None:
    """Every result is valid; the reasons of the first that is not are shown."""
    for result in results:
        assert result.valid, result.reasons


# Signing


@needs_xmlsec
@pytest.mark.parametrize(
    ("size", "line_ending"), [(0, b"\n"), (100_000, b"\r\n"), (3_000_000, b"\n"), (50_000, None)]
)
def test_stream_signature_verifies_with_xmlsec1_and_signxml(
    keys: Keys, tmp_path: Path, size: int, line_ending: bytes | None
) -> None:
    """What sign_file writes verifies with xmlsec1, signxml and verify_file; tampering fails."""
    src, dst = tmp_path / "in.xml", tmp_path / "signed.xml"
    write_large_package(EDOC.read_bytes(), src, size, line_ending=line_ending)
    sign_file(src, dst, keys.identity, max_bytes=1 << 30)
    assert xmlsec_verifies(keys, dst)
    tree, stream = both(keys, dst)
    assert tree.valid, tree.reasons
    assert stream.valid, stream.reasons
    assert stream.sender == tree.sender == H49
    assert stream.chain == tree.chain
    # The input bytes are all there, in order, with the Signature inserted after the trace list.
    signed = dst.read_bytes()
    start = signed.index(b"<ds:Signature")
    end = signed.index(b"</ds:Signature>") + len(b"</ds:Signature>")
    assert signed[:start] + signed[end:] == src.read_bytes()
    assert signed[:start].endswith(TRACE_END)
    tampered = tmp_path / "tampered.xml"
    tampered.write_bytes(signed.replace("Tam Kỳ".encode(), "Tam Kỵ".encode(), 1))
    assert not xmlsec_verifies(keys, tampered)
    assert [r.reasons for r in both(keys, tampered)] == [(CHANGED,), (CHANGED,)]


@needs_xmlsec
def test_ecdsa_and_status_packages(tmp_path: Path, keys: Keys) -> None:
    """An ECDSA P-256 identity signs by default with ECDSA-SHA256; status packages sign too."""
    for sample, sender in (("edoc.xml", H49), ("status.xml", "000.00.00.H49")):
        issued = pki.issue_agency(keys.ca, sender, key_type="ec")
        identity = SigningIdentity(issued.key, issued.certificate)
        dst = tmp_path / f"signed-{sample}"
        sign_file(DATA / "trust" / sample, dst, identity)
        tree, stream = both(keys, dst)
        assert stream.valid, stream.reasons
        assert stream.algorithm == tree.algorithm == "ecdsa-sha256"
        assert xmlsec_verifies(keys, dst)


def test_signature_goes_after_message_header_without_trace_list(keys: Keys, tmp_path: Path) -> None:
    """Without TraceHeaderList the Signature follows MessageHeader, as sign_package puts it."""
    data = EDOC.read_bytes()
    start = data.index(b"<edXML:TraceHeaderList>")
    end = data.index(TRACE_END) + len(TRACE_END)
    (tmp_path / "in.xml").write_bytes(data[:start] + data[end:])
    sign_file(tmp_path / "in.xml", tmp_path / "out.xml", keys.identity)
    signed = (tmp_path / "out.xml").read_bytes()
    assert signed[: signed.index(b"<ds:Signature")].endswith(b"</edXML:MessageHeader>")
    assert verify_file(tmp_path / "out.xml", keys.trust).valid


def test_sign_refusals(keys: Keys, tmp_path: Path) -> None:
    """Signed, headerless, Id-carrying and malformed packages are refused; no output is left."""
    dst = tmp_path / "out.xml"
    signed = tmp_path / "signed.xml"
    signed.write_bytes(sign_package(EDOC.read_bytes(), keys.identity))
    with pytest.raises(AlreadySigned):
        sign_file(signed, dst, keys.identity)
    cases = {
        "no-header.xml": b"<edXML><edXMLEnvelope><Other/></edXMLEnvelope></edXML>",
        "root-id.xml": EDOC.read_bytes().replace(b"<edXML ", b'<edXML Id="x" ', 1),
        "empty-header.xml": b"<edXML><edXMLEnvelope><edXMLHeader/></edXMLEnvelope></edXML>",
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(PeerInputError):
            sign_file(tmp_path / name, dst, keys.identity)
    (tmp_path / "bad.xml").write_bytes(b"<edXML><unclosed></edXML>")
    with pytest.raises(XmlRefused):
        sign_file(tmp_path / "bad.xml", dst, keys.identity)
    assert not dst.exists()


# Verifying what others sign


@needs_xmlsec
def test_stream_verifies_what_xmlsec1_and_signxml_sign(keys: Keys, tmp_path: Path) -> None:
    """xmlsec1 signatures (DSig or edXML namespace) and signxml's verify as the tree does."""
    package = EDOC.read_bytes()
    by_xmlsec = xmlsec_sign(keys, package, tmp_path / "xmlsec.xml")
    tree, stream = both(keys, by_xmlsec)
    assert_valid(tree, stream)
    edxml_ns = tmp_path / "edxml-ns.xml"
    edxml_ns.write_bytes(by_xmlsec.read_bytes().replace(f' xmlns="{DSIG}"'.encode(), b""))
    tree, stream = both(keys, edxml_ns)
    assert_valid(tree, stream)
    by_signxml = tmp_path / "signxml.xml"
    by_signxml.write_bytes(sign_package(package, keys.identity))
    tree, stream = both(keys, by_signxml)
    assert_valid(tree, stream)
    assert stream == tree


@needs_xmlsec
def test_signature_after_the_attachment(keys: Keys, tmp_path: Path) -> None:
    """A Signature at the end of a large package verifies with SHA-256; with another digest
    the stream refuses (it could not keep the content waiting), saying why."""
    big = tmp_path / "big.xml"
    write_large_package(EDOC.read_bytes(), big, DIGEST_BUFFER)
    at_end = xmlsec_sign(keys, big.read_bytes(), tmp_path / "end.xml", at_end=True)
    tree, stream = both(keys, at_end, policy=VerifyPolicy(max_bytes=1 << 30))
    assert_valid(tree, stream)
    sha512 = xmlsec_sign(
        keys, big.read_bytes(), tmp_path / "end512.xml", at_end=True, digest=SHA512
    )
    result = verify_file(sha512, keys.trust, policy=VerifyPolicy(max_bytes=1 << 30))
    assert not result.valid
    assert "can only use SHA-256" in result.reasons[0]
    small = xmlsec_sign(
        keys, EDOC.read_bytes(), tmp_path / "small512.xml", at_end=True, digest=SHA512
    )
    assert verify_file(small, keys.trust).valid


@needs_xmlsec
def test_sha1_follows_the_policy(keys: Keys, tmp_path: Path) -> None:
    """RSA-SHA1 is refused by default and weak when allowed, with the tree verifier's reasons."""
    signed = xmlsec_sign(
        keys, EDOC.read_bytes(), tmp_path / "sha1.xml", method=RSA_SHA1, digest=SHA1
    )
    tree, stream = both(keys, signed)
    assert stream == tree
    assert not stream.valid
    tree, stream = both(keys, signed, policy=VerifyPolicy(allow_sha1=True))
    assert stream == tree
    assert stream.valid
    assert stream.weak


# Attacks: refused by both verifiers


@pytest.fixture
def signed(keys: Keys, tmp_path: Path) -> bytes:
    """The sample package signed by the stream signer."""
    sign_file(EDOC, tmp_path / "signed.xml", keys.identity)
    return (tmp_path / "signed.xml").read_bytes()


def _signature(data: bytes) -> bytes:
    return data[data.index(b"<ds:Signature") : data.index(b"</ds:Signature>") + 15]


ATTACKS = {
    "second signature": lambda d: d.replace(
        b"</edXML:edXMLHeader>", _signature(d) + b"</edXML:edXMLHeader>"
    ),
    "second message header": lambda d: d.replace(
        b"<edXML:edXMLBody>",
        b"<edXML:MessageHeader><edXML:From><edXML:OrganId>000.00.00.G22</edXML:OrganId>"
        b"</edXML:From></edXML:MessageHeader><edXML:edXMLBody>",
    ),
    "reference to an id": lambda d: d.replace(b'URI=""', b'URI="#body"'),
    "reference URI with a space": lambda d: d.replace(b'URI=""', b'URI=" "'),
    "extra reference": lambda d: d.replace(
        b"</ds:SignedInfo>",
        d[d.index(b"<ds:Reference") : d.index(b"</ds:Reference>") + 15] + b"</ds:SignedInfo>",
    ),
    "digest method with a space": lambda d: d.replace(b'xmlenc#sha256"', b'xmlenc#sha256 "'),
    "signature in another namespace": lambda d: d.replace(
        b'xmlns:ds="http://www.w3.org/2000/09/xmldsig#"', b'xmlns:ds="urn:not-dsig"'
    ),
    "sender changed": lambda d: d.replace(b"000.00.12.H49<", b"000.00.12.H50<", 1),
    "content changed inside a comment's neighbour": lambda d: d.replace(
        "Tam Kỳ".encode(), "Tam<!-- -->Kỳ".encode(), 1
    ),
    "signed info changed": lambda d: d.replace(b"rsa-sha256", b"rsa-sha512"),
    "certificate replaced": lambda d: d.replace(
        b"<ds:X509Certificate>MII", b"<ds:X509Certificate>MIJ"
    ),
    "default namespace moved": lambda d: d.replace(
        b'<edXML xmlns="http://www.mic.gov.vn/TBT/QCVN_102_2016"', b'<edXML xmlns="urn:other"', 1
    ),
    "attribute value with a space": lambda d: d.replace(
        b'Manifest version="1.0"', b'Manifest version=" 1.0"'
    ),
    "transform with a space": lambda d: d.replace(
        b'enveloped-signature"', b'enveloped-signature "'
    ),
    "unsigned": lambda d: d.replace(_signature(d), b""),
    "doctype": lambda d: d.replace(b"<edXML ", b'<!DOCTYPE edXML [<!ENTITY a "b">]><edXML ', 1),
}


@pytest.mark.parametrize("attack", ATTACKS, ids=list(ATTACKS))
def test_attacks_are_refused_by_both(
    keys: Keys, tmp_path: Path, signed: bytes, attack: str
) -> None:
    """Each tampering is refused by the tree verifier and by the stream verifier, with the
    same reason unless the stream refuses earlier (transforms it does not digest)."""
    changed = ATTACKS[attack](signed)
    assert changed != signed
    path = tmp_path / "attack.xml"
    path.write_bytes(changed)
    tree, stream = both(keys, path)
    assert not tree.valid
    assert not stream.valid
    if attack == "transform with a space":
        assert "transforms must be exactly" in stream.reasons[0]
    else:
        assert stream.reasons == tree.reasons


def test_comment_in_sender_does_not_cut_it(keys: Keys, tmp_path: Path, signed: bytes) -> None:
    """A comment inside the signed OrganId changes neither digest nor sender, in both."""
    path = tmp_path / "comment.xml"
    path.write_bytes(signed.replace(b">000.00.12.H49<", b">000.00.12.H<!-- x -->49<", 1))
    tree, stream = both(keys, path)
    assert tree.valid
    assert stream.valid
    assert tree.sender == stream.sender == H49


def test_other_transforms_are_refused_by_the_stream(keys: Keys, tmp_path: Path) -> None:
    """A reference without the exclusive C14N transform cannot be digested as a stream."""
    data = sign_package(EDOC.read_bytes(), keys.identity)
    transform = b'<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
    assert transform in data
    path = tmp_path / "inclusive.xml"
    path.write_bytes(data.replace(transform, b""))
    result = verify_file(path, keys.trust)
    assert not result.valid
    assert "transforms must be exactly" in result.reasons[0]


# Memory


MEMORY_CHILD = textwrap.dedent(
    """
    import sys, resource
    from pathlib import Path
    from lienthong.keyfiles import load_identity
    from lienthong.trust import TrustStore
    from lienthong.trust.keys import load_certificates
    from lienthong.trust.stream import sign_file, verify_file
    from lienthong.trust.verify import VerifyPolicy

    folder = Path(sys.argv[1])
    identity = load_identity(folder / "agency.key", folder / "agency.crt")
    trust = TrustStore(tuple(load_certificates((folder / "ca.crt").read_bytes())))
    def peak():
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    idle = peak()
    sign_file(folder / "big.xml", folder / "signed.xml", identity, max_bytes=1 << 31)
    result = verify_file(folder / "signed.xml", trust, policy=VerifyPolicy(max_bytes=1 << 31))
    print(idle, peak(), result.valid, *result.reasons)
    """
)


def test_large_package_signs_and_verifies_in_bounded_memory(keys: Keys, tmp_path: Path) -> None:
    """A 200 MB attachment is signed and verified by a process whose peak RSS grows by far
    less than the package size."""
    for name in ("agency.key", "agency.crt", "ca.crt"):
        shutil.copy(keys.folder / name, tmp_path / name)
    write_large_package(EDOC.read_bytes(), tmp_path / "big.xml", 200 << 20)
    size = (tmp_path / "big.xml").stat().st_size
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    idle, peak, valid, *reasons = done.stdout.split(maxsplit=3)
    assert valid == "True", reasons
    grown = int(peak) - int(idle)
    assert size > 270 << 20
    assert grown < 64 << 20, f"peak RSS grew by {grown >> 20} MB for a {size >> 20} MB package"
