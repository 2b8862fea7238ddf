"""Sign and verify package files as streams, in memory bounded by the chunk size.

:func:`~lienthong.trust.sign.sign_package` and :func:`~lienthong.trust.verify.verify_package`
take the package as bytes and build a tree of it, several times its size. :func:`sign_file` and
:func:`verify_file` read a file in pieces (:mod:`lienthong.xmlstream`), canonicalise it as it
is read (:mod:`lienthong.trust.c14n`) into a running digest, and leave out the ``Signature``
element as the enveloped-signature transform does. They make and accept the same signatures as
the tree functions, xmlsec1 and signxml, and share the tree verifier's checks (signature count,
reference, algorithms, certificates, chain, dates, CRLs, signer binding) and its reasons.

Signing reads the file once: it digests it, finds where the signature goes (right after
``TraceHeaderList`` in ``edXMLEnvelope/edXMLHeader``, else after ``MessageHeader``) and copies
it to the output with a gap there, filled with the ``ds:Signature`` at the end. Input bytes are
copied as they are; the signature covers their canonical form, which the insertion does not
change.

Verifying reads the file once. The Signature element (small) is kept, canonicalised; its
digest method is known only once it has been read, so the canonical bytes before it are kept
too, up to :data:`DIGEST_BUFFER`; past that they are digested with SHA-256. Where a stream
cannot decide safely it refuses with a reason, never loads the whole package:

- the Signature comes after :data:`DIGEST_BUFFER` bytes of content and names a digest other
  than SHA-256;
- SignedInfo is not canonicalised with exclusive C14N without comments and without an
  InclusiveNamespaces prefix list (anything else depends on the ancestors' namespaces);
- the Reference's transforms are not exactly enveloped-signature then exclusive C14N;
- the Signature is larger than :data:`MAX_SIGNATURE`, the sender is longer than
  :data:`MAX_SENDER` characters, the package is not UTF-8, or a single tag or comment is
  longer than :data:`lienthong.xmlstream.MAX_MARKUP`.

The tree verifier accepts the last three kinds of signatures; none is produced by this project
or by xmlsec1 templates of QCVN 102 packages.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import os
import queue
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

from cryptography.hazmat.primitives.asymmetric import ec, padding, utils
from lxml import etree
from signxml.algorithms import DigestAlgorithm, digest_algorithm_implementations
from signxml.exceptions import InvalidDigest, InvalidInput, SignXMLException
from signxml.verifier import XMLVerifier

from lienthong.errors import PeerInputError
from lienthong.trust import _tree
from lienthong.trust.c14n import ExclusiveC14N, qualified_name
from lienthong.trust.keys import PrivateKey, SigningIdentity
from lienthong.trust.sign import (
    ALGORITHMS,
    NO_HEADER,
    ROOT_ID,
    already_signed,
    choose_algorithm,
    key_info,
)
from lienthong.trust.truststore import TrustStore
from lienthong.trust.verify import (
    SIGNXML_PARSER,
    SignerBinding,
    Verification,
    VerifyPolicy,
    conclude,
    count_problem,
    crypto_failure,
    examine,
    expected_config,
    refused,
)
from lienthong.xmlsafe import DEFAULT_MAX_BYTES, parse_xml
from lienthong.xmlstream import Name, XmlStream, open_package

DIGEST_BUFFER = 4 << 20
"""Canonical bytes kept before the Signature is read, waiting to learn its digest method."""

MAX_SIGNATURE = 1 << 20
"""Largest canonical Signature element accepted, in bytes (a chain of certificates is ~5 KB)."""

MAX_SENDER = 4096
"""Longest MessageHeader/From/OrganId text read, in characters."""

ENVELOPED = "http://www.w3.org/2000/09/xmldsig#enveloped-signature"
SHA256 = DigestAlgorithm.SHA256.value
_DEFAULT_POLICY = VerifyPolicy()
_SIGNATURE_NAMESPACES = (_tree.DSIG_NS, _tree.EDXML_NS)
_HEADER_NAMES = ("MessageHeader", "Status")


class Undecidable(PeerInputError):
    """Streaming cannot decide about this package safely; the reason says why."""


class _Hasher:
    """A hashlib object fed from a thread of its own once the input passes one batch.

    hashlib lets go of the GIL while it hashes, so the hashing of a large package runs beside
    its reading and canonicalising instead of after them: signing and verifying then take little
    more than the time of the hash alone. At most two batches wait, so memory stays bounded.
    """

    def __init__(self, name: str) -> None:
        self._hash = hashlib.new(name)
        self._batch: list[bytes | memoryview] = []
        self._size = 0
        self._queue: queue.Queue[list[bytes | memoryview] | None] = queue.Queue(maxsize=2)
        self._thread: threading.Thread | None = None

    def update(self, data: bytes | memoryview) -> None:
        self._batch.append(data)
        self._size += len(data)
        if self._size >= _BATCH:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="digest", daemon=True)
                self._thread.start()
            self._queue.put(self._batch)
            self._batch = []
            self._size = 0

    def _work(self) -> None:
        while (batch := self._queue.get()) is not None:
            for piece in batch:
                self._hash.update(piece)

    def digest(self) -> bytes:
        self.close()
        for piece in self._batch:
            self._hash.update(piece)
        self._batch = []
        return self._hash.digest()

    def close(self) -> None:
        """Stop the thread once it has hashed what it was given."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None


_BATCH = 1 << 20


class _Digest:
    """The running digest of the canonical document, its algorithm chosen when known."""

    def __init__(self) -> None:
        self._held: list[bytes] | None = []
        self._size = 0
        self._hash: _Hasher | None = None
        self.uri: str | None = None
        self.conflict: str | None = None  # a digest named after SHA-256 had to be chosen

    def write(self, data: bytes | memoryview) -> None:
        if self._hash is not None:
            self._hash.update(data)
            return
        assert self._held is not None
        self._held.append(bytes(data))
        self._size += len(data)
        if self._size > DIGEST_BUFFER:
            self.choose(SHA256)

    def choose(self, uri: str) -> None:
        """Digest with the algorithm named ``uri`` (an XML-DSig DigestMethod); an unknown one
        is left to the signature check to refuse."""
        if self._hash is not None:
            if uri != self.uri:
                self.conflict = uri
            return
        try:
            name = DigestAlgorithm(uri).name.lower()
        except ValueError:
            return
        self._hash = _Hasher(name)
        self.uri = uri
        for piece in self._held or ():
            self._hash.update(piece)
        self._held = None

    def value(self) -> bytes:
        if self._hash is None:
            self.choose(SHA256)
        assert self._hash is not None
        return self._hash.digest()

    def close(self) -> None:
        """Release the hashing thread; call it however the reading ended."""
        if self._hash is not None:
            self._hash.close()


class _Scan:
    """Route a package's events: the Signature to its own canonical copy, everything else to
    the digest; note the facts the signer and verifier need on the way."""

    def __init__(self, digest: _Digest) -> None:
        self.stream: XmlStream | None = None
        self._digest = digest
        self._c14n = ExclusiveC14N(digest.write)
        self._path: list[str] = []  # local names of the open elements
        self.signatures = 0
        self.headers = 0
        self._capture: ExclusiveC14N | None = None
        self._capture_depth = 0
        self._captured = bytearray()
        self.signature: etree._Element | None = None
        self.sender: str | None = None
        self.sender_problem: str | None = None
        self._organ: list[str] | None = None  # text of the OrganId being read
        self._organ_size = 0
        self.root_id = False
        self._envelope = self._header = ""  # "" not seen, "open", "done"
        self._anchors: set[str] = set()  # TraceHeaderList, MessageHeader: first one seen
        self._open_anchor = ""
        self.places: dict[str, int] = {}  # where a signature may go: byte offsets
        self.header_end_tag = b""
        self._want: str | None = None

    # StreamHandler

    def start(self, name: Name, attributes: list[tuple[Name, str]]) -> None:
        self._record()
        self._path.append(name.local)
        depth = len(self._path)
        if name.local in _HEADER_NAMES:
            self.headers += 1
        if name.local == "Signature" and name.uri in _SIGNATURE_NAMESPACES:
            self.signatures += 1
            if self.signatures == 1:
                self._capture = ExclusiveC14N(self._keep)
                self._capture_depth = depth
        if self._capture is not None:
            self._capture.start(name, attributes)
            return
        self._end_organ()
        self._c14n.start(name, attributes)
        path = self._path
        if (
            name.local == "OrganId"
            and self.sender is None
            and depth >= 3
            and path[-2] == "From"
            and path[-3] in _HEADER_NAMES
        ):
            self._organ = []
            self._organ_size = 0
        self._place_start(name, depth, attributes)

    def end(self, name: Name) -> None:
        self._record()
        depth = len(self._path)
        self._path.pop()
        if self._capture is not None:
            self._capture.end(name)
            if depth == self._capture_depth:
                self._capture = None
                self._captured_signature()
            return
        self._end_organ()
        self._c14n.end(name)
        self._place_end(depth, name.local)

    def text(self, text: str) -> None:
        self._record()
        if self._capture is not None:
            self._capture.text(text)
            return
        if self._organ is not None:
            self._read_organ(text)
        self._c14n.text(text)

    def plain(self, data: bytes | memoryview) -> None:
        self._record()
        if self._capture is not None:
            self._capture.plain(data)
            return
        if self._organ is not None:
            self._read_organ(bytes(data[: MAX_SENDER + 1]).decode("ascii"), len(data))
        self._c14n.plain(data)

    def pi(self, target: str, data: str) -> None:
        self._record()
        if self._capture is not None:
            self._capture.pi(target, data)
            return
        self._end_organ()
        self._c14n.pi(target, data)

    def comment(self, text: str) -> None:
        self._record()

    # the Signature

    def _keep(self, data: bytes | memoryview) -> None:
        self._captured += data
        if len(self._captured) > MAX_SIGNATURE:
            raise Undecidable(
                f"the Signature element is larger than {MAX_SIGNATURE} bytes; streaming"
                " verification does not hold one that large"
            )

    def _captured_signature(self) -> None:
        self.signature = parse_xml(bytes(self._captured))
        self._captured = bytearray()
        info = _tree.child(self.signature, "SignedInfo")
        reference = _tree.child(info, "Reference") if info is not None else None
        method = _tree.child(reference, "DigestMethod") if reference is not None else None
        if method is not None:
            self._digest.choose(method.get("Algorithm") or "")

    # the sender, read as the tree verifier reads it: the text of the first non-empty
    # MessageHeader/From/OrganId up to its first child element, comments left out

    def _read_organ(self, text: str, size: int | None = None) -> None:
        assert self._organ is not None
        self._organ_size += len(text) if size is None else size
        if self._organ_size > MAX_SENDER:
            self.sender_problem = (
                f"the sender (MessageHeader/From/OrganId) is longer than {MAX_SENDER} characters"
            )
            self._organ = None
            return
        self._organ.append(text)

    def _end_organ(self) -> None:
        if self._organ is not None:
            text = "".join(self._organ).strip()
            self._organ = None
            if text and self.sender_problem is None:
                self.sender = text

    # where the signature goes

    def _place_start(self, name: Name, depth: int, attributes: list[tuple[Name, str]]) -> None:
        local = name.local
        if depth == 1:
            self.root_id = any(a.uri == "" and a.local in ("Id", "ID") for a, _ in attributes)
        elif depth == 2 and local == "edXMLEnvelope" and not self._envelope:
            self._envelope = "open"
        elif depth == 3 and self._envelope == "open" and local == "edXMLHeader":
            if not self._header:
                self._header = "open"
                self.header_end_tag = f"</{qualified_name(name)}".encode()
        elif (
            depth == 4
            and self._header == "open"
            and local in ("TraceHeaderList", "MessageHeader")
            and local not in self._anchors
        ):
            self._anchors.add(local)
            self._open_anchor = local

    def _place_end(self, depth: int, local: str) -> None:
        if depth == 4 and self._header == "open" and self._open_anchor == local:
            self._open_anchor = ""
            self._want = local  # the next event is where its end tag stopped
        elif depth == 3 and self._header == "open":
            self._header = "done"
            self.places.setdefault("edXMLHeader", self._position())
        elif depth == 2 and self._envelope == "open":
            self._envelope = "done"

    def _record(self) -> None:
        if self._want is not None:
            self.places[self._want] = self._position()
            self._want = None

    def _position(self) -> int:
        assert self.stream is not None
        return self.stream.position


def _scan(path: Path, digest: _Digest, max_bytes: int) -> _Scan:
    scan = _Scan(digest)
    with open_package(path, max_bytes) as source:
        scan.stream = XmlStream(scan)
        scan.stream.read(source, max_bytes=max_bytes)
    return scan


def digest_file(path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """SHA-256 of the exclusive canonical form of the package without its Signature: the
    digest an enveloped, exc-c14n, URI="" reference over it carries."""
    digest = _Digest()
    digest.choose(SHA256)
    try:
        _scan(path, digest, max_bytes)
        return digest.value()
    finally:
        digest.close()


def sign_file(
    src: Path,
    dst: Path,
    identity: SigningIdentity,
    *,
    algorithm: str | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
) -> None:
    """Write ``src`` signed by ``identity`` to ``dst``, holding neither in memory.

    The same signature as :func:`~lienthong.trust.sign.sign_package` (algorithms, placement,
    KeyInfo) with a SHA-256 digest; the input bytes are kept as they are, declaration
    included. Refusals are those of ``sign_package`` (:class:`~lienthong.errors.XmlRefused`,
    :class:`~lienthong.trust.sign.AlreadySigned` (streaming never replaces a signature),
    :class:`~lienthong.errors.PeerInputError`, :class:`ValueError` for the algorithm) plus the
    stream's own (see :mod:`lienthong.xmlstream`). ``dst`` is removed when signing fails; write
    it under a temporary name and rename it if others may look at it meanwhile.
    """
    name = choose_algorithm(identity, algorithm)
    digest = _Digest()
    digest.choose(SHA256)
    scan = _Scan(digest)
    scan.stream = XmlStream(scan)
    try:
        with open_package(src, max_bytes) as source, dst.open("wb") as out:
            copy = _Copy(scan, source, out, len(_signature(identity, name, bytes(32), sign=False)))
            scan.stream.read(source, max_bytes=max_bytes, then=copy)
            if scan.signatures:
                raise already_signed(scan.signatures)
            if scan.root_id:
                raise PeerInputError(ROOT_ID)
            if copy.at is None:
                raise PeerInputError(NO_HEADER)
            out.seek(copy.at)
            out.write(_signature(identity, name, digest.value()))
    except BaseException:
        dst.unlink(missing_ok=True)
        raise
    finally:
        digest.close()


class _Copy:
    """Copy the input to the output as it is parsed, leaving a gap for the signature.

    The gap's place is known when the header ends (the TraceHeaderList, if any, has then been
    seen); the bytes already copied past it are copied again after the gap, read back from the
    input. The signature's length does not depend on the digest or its value, so the gap is
    filled in place once the whole input has been digested.
    """

    def __init__(self, scan: _Scan, source: BinaryIO, out: BinaryIO, gap: int) -> None:
        self._scan = scan
        self._source = source.fileno()
        self._out = out
        self._gap = gap
        self.at: int | None = None

    def __call__(self, chunk: bytes, total: int) -> None:
        self._out.write(chunk)
        places = self._scan.places
        if self.at is not None or "edXMLHeader" not in places:
            return
        anchor = next((a for a in ("TraceHeaderList", "MessageHeader") if a in places), None)
        at = self.at = places[anchor or "edXMLHeader"]
        if anchor is not None and os.pread(self._source, 1, at - 1) != b">":
            raise PeerInputError("the signature's place in the package could not be found")
        tag = self._scan.header_end_tag
        if anchor is None and os.pread(self._source, len(tag), at) != tag:
            raise PeerInputError(
                "the edXMLHeader element is empty (<edXMLHeader/>); it cannot hold a signature"
            )
        self._out.seek(at)
        self._out.truncate()
        self._out.write(bytes(self._gap))
        self._out.write(os.pread(self._source, total - at, at))


def _signature(
    identity: SigningIdentity, algorithm: str, digest: bytes, *, sign: bool = True
) -> bytes:
    """The ``ds:Signature`` element over a document whose digest is ``digest``; with ``sign``
    false, one of the same length with a zero signature value."""
    method = ALGORITHMS[algorithm]
    signature = etree.Element(_ds("Signature"), nsmap={"ds": _tree.DSIG_NS})
    info = etree.SubElement(signature, _ds("SignedInfo"))
    etree.SubElement(info, _ds("CanonicalizationMethod"), Algorithm=_tree.EXC_C14N)
    etree.SubElement(info, _ds("SignatureMethod"), Algorithm=method.value)
    reference = etree.SubElement(info, _ds("Reference"), URI="")
    transforms = etree.SubElement(reference, _ds("Transforms"))
    for uri in (ENVELOPED, _tree.EXC_C14N):
        etree.SubElement(transforms, _ds("Transform"), Algorithm=uri)
    etree.SubElement(reference, _ds("DigestMethod"), Algorithm=SHA256)
    etree.SubElement(reference, _ds("DigestValue")).text = base64.b64encode(digest).decode()
    if sign:
        signed = etree.tostring(info, method="c14n", exclusive=True, with_comments=False)
        value = _sign(identity.key, digest_algorithm_implementations[method](), signed)
    else:
        value = bytes(_signature_size(identity.key))
    etree.SubElement(signature, _ds("SignatureValue")).text = base64.b64encode(value).decode()
    signature.append(key_info(identity))
    out: bytes = etree.tostring(signature, encoding="UTF-8")
    return out


def _signature_size(key: PrivateKey) -> int:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return 2 * ((key.curve.key_size + 7) // 8)
    return (key.key_size + 7) // 8


def _sign(key: PrivateKey, hash_algorithm: Any, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        # XML-DSig carries ECDSA signatures as r and s side by side, not DER (RFC 4050).
        r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(hash_algorithm)))
        size = _signature_size(key) // 2
        return r.to_bytes(size, "big") + s.to_bytes(size, "big")
    return key.sign(data, padding.PKCS1v15(), hash_algorithm)


def _ds(local: str) -> etree.QName:
    return etree.QName(_tree.DSIG_NS, local)


def verify_file(
    path: Path,
    trust: TrustStore,
    *,
    at: dt.datetime | None = None,
    policy: VerifyPolicy = _DEFAULT_POLICY,
    signer_binding: SignerBinding | None = None,
) -> Verification:
    """Check the package file's signature, certificate and signer, reading it once in pieces.

    The contract of :func:`~lienthong.trust.verify.verify_package` (never raises on bad
    input; reasons are sentences for a status 02; the sender comes from the signed content),
    with the refusals a stream adds (see the module docstring). ``policy.max_bytes`` is the
    largest file accepted.
    """
    digest = _Digest()
    try:
        return _verify_file(path, trust, at, policy, signer_binding, digest)
    finally:
        digest.close()


def _verify_file(
    path: Path,
    trust: TrustStore,
    at: dt.datetime | None,
    policy: VerifyPolicy,
    signer_binding: SignerBinding | None,
    digest: _Digest,
) -> Verification:
    try:
        scan = _scan(path, digest, policy.max_bytes)
    except PeerInputError as exc:  # XmlRefused and Undecidable
        return refused(str(exc))
    problem = count_problem(scan.signatures, scan.headers)
    if problem:
        return refused(problem)
    assert scan.signature is not None
    examined = examine(scan.signature, policy)
    if isinstance(examined, Verification):
        return examined
    problem = _not_streamable(examined.signature, digest)
    if problem:
        return replace(examined.known, reasons=(problem,))
    try:
        _StreamedVerifier(digest).verify(
            examined.signature,
            x509_cert=examined.leaf,
            parser=SIGNXML_PARSER,
            expect_config=expected_config(examined.leaf, examined.weak),
        )
    except (SignXMLException, etree.LxmlError, ValueError, binascii.Error) as exc:
        return crypto_failure(examined, exc)
    if scan.sender_problem:
        return replace(examined.known, reasons=(scan.sender_problem,))
    return conclude(examined, scan.sender, trust, at or dt.datetime.now(dt.UTC), signer_binding)


def _not_streamable(signature: etree._Element, digest: _Digest) -> str | None:
    """Why a stream cannot check this (well-formed) signature, or None."""
    c14n = signature.find("ds:SignedInfo/ds:CanonicalizationMethod", _DS)
    if c14n is None or c14n.get("Algorithm") != _tree.EXC_C14N or len(c14n):
        return (
            "SignedInfo must be canonicalised with exclusive C14N without comments and"
            " without an InclusiveNamespaces list for streaming verification"
        )
    reference = signature.find("ds:SignedInfo/ds:Reference", _DS)
    assert reference is not None  # examine() required exactly one
    problem = _transforms_problem(reference)
    if problem:
        return problem
    if digest.conflict is not None:
        return (
            f"the Signature comes after the first {DIGEST_BUFFER} bytes of the package and"
            f" names the digest {digest.conflict}; streaming verification can only use SHA-256"
            " there"
        )
    return None


def _transforms_problem(reference: etree._Element) -> str | None:
    transforms = reference.findall("ds:Transforms/ds:Transform", _DS)
    if [t.get("Algorithm") for t in transforms] == [ENVELOPED, _tree.EXC_C14N] and not any(
        len(t) for t in transforms
    ):
        return None
    return (
        "the reference's transforms must be exactly enveloped-signature then exclusive C14N"
        " (without comments or InclusiveNamespaces) for streaming verification"
    )


_DS = {"ds": _tree.DSIG_NS}


class _StreamedVerifier(XMLVerifier):
    """signxml's verifier with the reference's digest compared to the one the stream computed.

    Everything else (schema of the Signature, canonical SignedInfo, algorithms allowed, the
    signature value against the certificate) is signxml's, as for the tree verifier; the
    reference is read from the SignedInfo signxml has just verified.
    """

    def __init__(self, digest: _Digest) -> None:
        super().__init__()
        self._digest = digest

    def _verify_reference(
        self, reference: etree._Element, index: int, *_: object, **__: object
    ) -> None:
        if reference.get("URI") != "" or _transforms_problem(reference):
            raise InvalidInput("the signed reference is not the one that was digested")
        method = reference.find("ds:DigestMethod", _DS)
        algorithm = DigestAlgorithm(method.get("Algorithm") if method is not None else None)
        signxml: Any = self  # its checks are untyped
        signxml.check_digest_alg_expected(algorithm)
        if algorithm.value != self._digest.uri:
            raise InvalidInput(f"the package was not digested with {algorithm.value}")
        value = reference.find("ds:DigestValue", _DS)
        expected = base64.b64decode((value.text if value is not None else None) or "")
        if expected != self._digest.value():
            raise InvalidDigest(f"Digest mismatch for reference {index}")


__all__ = ["Undecidable", "digest_file", "sign_file", "verify_file"]
