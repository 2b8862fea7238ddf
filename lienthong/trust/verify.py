"""Verify a signed edXML package: signature, certificate chain, and signer-to-sender binding.

:func:`verify_package` never raises on bad input: every problem becomes a sentence in
``Verification.reasons``, written to be the Description of a status 02 sent back to the sender.
The sender is read from the content the signature covers (what signxml returns after checking
the digest), never from the raw bytes, so text outside the signed part cannot name a sender.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.x509.oid import NameOID
from lxml import etree
from signxml.algorithms import DigestAlgorithm, SignatureMethod
from signxml.exceptions import InvalidDigest, InvalidSignature, SignXMLException
from signxml.verifier import SignatureConfiguration, XMLVerifier

from lienthong.errors import XmlRefused
from lienthong.trust import _tree
from lienthong.trust.truststore import TrustStore, describe
from lienthong.xmlsafe import DEFAULT_MAX_BYTES, parse_xml

SignerBinding = Callable[[str, x509.Certificate], bool]
"""Decides whether a certificate may sign for an agency code: ``(sender, cert) -> bool``."""

CHANGED = "the signature does not match the content: the package was changed after signing"

_DS = {"ds": _tree.DSIG_NS}
SIGNXML_PARSER = etree.XMLParser(
    resolve_entities=False, load_dtd=False, no_network=True, huge_tree=True
)


@dataclass(frozen=True)
class VerifyPolicy:
    """What the verifier accepts beyond the defaults."""

    allow_sha1: bool = False
    """Accept legacy RSA-SHA1 signatures and SHA-1 digests; the result is then ``weak``."""
    max_bytes: int = DEFAULT_MAX_BYTES
    """Largest package accepted, as for :func:`lienthong.xmlsafe.parse_xml`."""


@dataclass(frozen=True)
class Verification:
    """The outcome of :func:`verify_package`.

    ``valid`` is true only when nothing was refused; ``reasons`` then may still hold warnings
    (a weak algorithm accepted by policy). ``chain`` lists subjects from the signer to the
    trusted CA; ``algorithm`` is the short name of the signature method (``rsa-sha256``).
    """

    valid: bool
    sender: str | None = None
    signer: x509.Certificate | None = None
    signer_subject: str = ""
    chain: tuple[str, ...] = ()
    algorithm: str = ""
    weak: bool = False
    reasons: tuple[str, ...] = field(default_factory=tuple)


def default_binding(sender: str, cert: x509.Certificate) -> bool:
    """True when the certificate's CN, serialNumber or UID attribute equals ``sender``."""
    oids = (NameOID.COMMON_NAME, NameOID.SERIAL_NUMBER, NameOID.USER_ID)
    values = {
        str(a.value).strip() for oid in oids for a in cert.subject.get_attributes_for_oid(oid)
    }
    return sender in values


def verify_package(
    data: bytes,
    trust: TrustStore,
    *,
    at: dt.datetime | None = None,
    policy: VerifyPolicy = VerifyPolicy(),
    signer_binding: SignerBinding | None = None,
) -> Verification:
    """Check the package's signature, its certificate against ``trust``, and who signed.

    ``at`` is the time certificates must be valid at (default now); a node passes the time it
    first received the package. ``signer_binding`` decides whether the certificate may sign
    for the package's From/OrganId (default :func:`default_binding`).
    """
    try:
        return _verify(data, trust, at or dt.datetime.now(dt.UTC), policy, signer_binding)
    except XmlRefused as exc:
        return refused(str(exc))


def refused(*reasons: str, algorithm: str = "", weak: bool = False) -> Verification:
    return Verification(False, algorithm=algorithm, weak=weak, reasons=reasons)


def _verify(
    data: bytes,
    trust: TrustStore,
    at: dt.datetime,
    policy: VerifyPolicy,
    binding: SignerBinding | None,
) -> Verification:
    root = parse_xml(data, max_bytes=policy.max_bytes)
    signatures = _tree.signatures(root)
    problem = count_problem(len(signatures), len(_tree.message_headers(root)))
    if problem:
        return refused(problem)
    examined = examine(signatures[0], policy)
    if isinstance(examined, Verification):
        return examined
    try:
        signed = _check_signature(root, examined.leaf, examined.weak)
    except (SignXMLException, etree.LxmlError, ValueError) as exc:
        return crypto_failure(examined, exc)
    return conclude(examined, _tree.sender(signed), trust, at, binding)


# The steps below are shared with the streaming verifier (lienthong.trust.stream), which
# finds the same facts in one pass over a file instead of a tree.


def count_problem(signatures: int, headers: int) -> str | None:
    """Refuse unsigned packages and wrapping: exactly one Signature and at most one
    MessageHeader (or Status) anywhere in the document."""
    if not signatures:
        return "the package is not signed"
    if signatures > 1:
        return f"the package holds {signatures} signatures where exactly one is allowed"
    if headers > 1:
        return (
            f"the package holds {headers} MessageHeader elements where exactly one is"
            " allowed: an added header is a signature-wrapping attempt"
        )
    return None


@dataclass(frozen=True)
class Examined:
    """What :func:`examine` read from a Signature element before any cryptography."""

    signature: etree._Element
    """The Signature, in the DSig namespace (converted from the edXML one if need be)."""
    from_edxml_ns: bool
    leaf: x509.Certificate
    others: list[x509.Certificate]
    name: str
    digest_name: str
    weak: bool
    known: Verification
    """A refusal naming the signer and algorithm, to fill with reasons."""


def examine(signature: etree._Element, policy: VerifyPolicy) -> Examined | Verification:
    """Read the reference, algorithms and certificates of ``signature``; a refusal when one
    of them is unacceptable. An edXML-namespace Signature is replaced in its tree by its DSig
    form (see :func:`_as_dsig`)."""
    from_edxml_ns = etree.QName(signature).namespace == _tree.EDXML_NS
    if from_edxml_ns:
        signature = _as_dsig(signature)
    problem = _reference_problem(signature)
    if problem:
        return refused(problem)
    method = _algorithm(signature, "ds:SignedInfo/ds:SignatureMethod")
    digest = _algorithm(signature, "ds:SignedInfo/ds:Reference/ds:DigestMethod")
    name = method.rpartition("#")[2] or method
    digest_name = digest.rpartition("#")[2] or digest
    weak = "sha1" in method.lower() or digest.lower().endswith("#sha1")
    if weak and not policy.allow_sha1:
        return refused(
            f"the package is signed with a SHA-1 algorithm ({name}, digest {digest_name}),"
            " which is too weak and refused",
            algorithm=name,
            weak=True,
        )
    certs, problem = _certificates(signature)
    if problem:
        return refused(problem, algorithm=name, weak=weak)
    leaf, others = _leaf(certs)
    known = Verification(
        False, signer=leaf, signer_subject=describe(leaf), algorithm=name, weak=weak
    )
    return Examined(signature, from_edxml_ns, leaf, others, name, digest_name, weak, known)


def crypto_failure(examined: Examined, exc: Exception) -> Verification:
    """The refusal for an error raised while checking the digest or the signature value."""
    if isinstance(exc, InvalidDigest):
        return replace(examined.known, reasons=(CHANGED,))
    if isinstance(exc, InvalidSignature):
        hint = (
            " (the Signature element was in the edXML namespace)" if examined.from_edxml_ns else ""
        )
        bad_value = (
            "the signature value does not verify with the certificate it carries: the signed"
            f" information or the certificate was replaced{hint}"
        )
        return replace(examined.known, reasons=(bad_value,))
    return replace(examined.known, reasons=(f"the signature is malformed: {exc}",))


def conclude(
    examined: Examined,
    sender: str | None,
    trust: TrustStore,
    at: dt.datetime,
    binding: SignerBinding | None,
) -> Verification:
    """Once the signature is good: check the chain, and that the signer may sign for
    ``sender`` (read from the signed content)."""
    leaf = examined.leaf
    checked = trust.check(leaf, examined.others, at)
    reasons = list(checked.reasons)
    if sender is None:
        reasons.append("the signed package names no sender (MessageHeader/From/OrganId)")
    elif not (binding or default_binding)(sender, leaf):
        reasons.append(f"certificate {describe(leaf)} may not sign for {sender}")
    valid = not reasons
    if examined.weak:
        reasons.append(
            f"the signature uses SHA-1 ({examined.name}, digest {examined.digest_name}),"
            " a weak algorithm accepted by policy"
        )
    return replace(
        examined.known,
        valid=valid,
        sender=sender,
        chain=tuple(describe(c) for c in checked.chain),
        reasons=tuple(reasons),
    )


def _as_dsig(signature: etree._Element) -> etree._Element:
    """Replace an edXML-namespace Signature subtree by the same subtree in the DSig namespace.

    Nothing digested changes: the enveloped transform removes Signature before digesting.
    The DSig namespace is declared as the default, as the producers that emit this form did
    when they computed the SignatureValue over SignedInfo.
    """
    copy = etree.Element(etree.QName(_tree.DSIG_NS, "Signature"), nsmap={None: _tree.DSIG_NS})  # type: ignore[dict-item]
    _copy_children(signature, copy)
    copy.tail = signature.tail
    parent = signature.getparent()
    if parent is not None:
        parent.replace(signature, copy)
    return copy


def _copy_children(source: etree._Element, target: etree._Element) -> None:
    target.attrib.update(dict(source.attrib))
    target.text = source.text
    for node in source:
        if not isinstance(node.tag, str):  # comments and processing instructions
            continue
        qname = etree.QName(node)
        ns = _tree.DSIG_NS if qname.namespace == _tree.EDXML_NS else qname.namespace
        child = etree.SubElement(target, etree.QName(ns, qname.localname))
        _copy_children(node, child)
        child.tail = node.tail


def _reference_problem(signature: etree._Element) -> str | None:
    refs = signature.findall("ds:SignedInfo/ds:Reference", _DS)
    uris = [r.get("URI") for r in refs]
    if uris == [""]:
        return None
    return (
        'the signature must cover the whole package (one Reference with URI=""),'
        f" but it has {len(refs)} reference(s): {', '.join(repr(u) for u in uris)}"
    )


def _algorithm(signature: etree._Element, path: str) -> str:
    node = signature.find(path, _DS)
    return (node.get("Algorithm") or "") if node is not None else ""


def _certificates(signature: etree._Element) -> tuple[list[x509.Certificate], str | None]:
    texts = [
        e.text or "" for e in signature.findall("ds:KeyInfo/ds:X509Data/ds:X509Certificate", _DS)
    ]
    if not texts:
        return [], "the signature carries no X.509 certificate (KeyInfo/X509Data/X509Certificate)"
    try:
        certs = [
            x509.load_der_x509_certificate(base64.b64decode("".join(t.split()))) for t in texts
        ]
        for cert in certs:
            # cryptography parses names and extensions lazily: force it here, where a
            # damaged certificate can still become a reason instead of an exception.
            cert.subject.rfc4514_string()
            cert.issuer.rfc4514_string()
            _ = cert.extensions
            cert.public_key()
    except (ValueError, binascii.Error, UnsupportedAlgorithm, x509.InvalidVersion) as exc:
        return [], f"a certificate in the signature cannot be read ({exc})"
    return certs, None


def _leaf(certs: list[x509.Certificate]) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The certificate that issued none of the others is the signer's; the rest may be CAs."""
    issuers = {c.issuer for c in certs}
    leaves = [c for c in certs if c.subject not in issuers or c.subject == c.issuer]
    leaf = leaves[0] if leaves else certs[0]
    return leaf, [c for c in certs if c is not leaf]


def expected_config(leaf: x509.Certificate, allow_sha1: bool) -> SignatureConfiguration:
    """What signxml is told to accept: no SHA-1 unless allowed, and a time inside the leaf's
    window, since the chain and its dates are checked by the trust store at the right time and
    signxml is to check the cryptography only."""
    return SignatureConfiguration(
        verification_time=leaf.not_valid_before_utc,
        signature_methods=frozenset(
            m for m in SignatureMethod if allow_sha1 or "SHA1" not in m.name
        ),
        digest_algorithms=frozenset(
            d for d in DigestAlgorithm if allow_sha1 or "SHA1" not in d.name
        ),
    )


def _check_signature(
    root: etree._Element, leaf: x509.Certificate, allow_sha1: bool
) -> etree._Element:
    """Verify digest and signature value with signxml; return the signed content."""
    config = expected_config(leaf, allow_sha1)
    result = XMLVerifier().verify(root, x509_cert=leaf, parser=SIGNXML_PARSER, expect_config=config)
    signed = getattr(result, "signed_xml", None)
    if not isinstance(signed, etree._Element):
        raise InvalidDigest("the signed content is not XML")
    return signed
