"""Sign edXML packages: XML-DSig enveloped, Reference URI="", exclusive C14N.

The ``ds:Signature`` goes inside ``edXMLEnvelope/edXMLHeader`` right after ``TraceHeaderList``
(after ``MessageHeader`` when there is no trace list), where QCVN 102 producers put it. The
certificate (and any intermediates) rides in ``KeyInfo/X509Data``.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric import ec
from lxml import etree
from signxml.algorithms import SignatureMethod
from signxml.exceptions import InvalidInput
from signxml.signer import XMLSigner

from lienthong.errors import PeerInputError
from lienthong.trust import _tree
from lienthong.trust.keys import SigningIdentity
from lienthong.xmlsafe import parse_xml

ALGORITHMS = {
    "rsa-sha256": SignatureMethod.RSA_SHA256,
    "rsa-sha512": SignatureMethod.RSA_SHA512,
    "ecdsa-sha256": SignatureMethod.ECDSA_SHA256,
}
"""Signature algorithms offered for signing, by short name."""


class _Unsigned:
    """What the signer is handed: a scratch holder for the signature, then the tree to digest.

    signxml asks for the document twice (``get_root``): first the tree that receives the
    signature, where it finds the placeholder to fill, then the tree to canonicalise and digest,
    from which it cuts the placeholder out.
    """

    def __init__(self, holder: etree._Element, digested: etree._Element) -> None:
        self.roots = [holder, digested]


class _Signer(XMLSigner):
    """An XMLSigner that takes our parsed tree as is instead of reparsing it.

    Per signature, signxml serialises and reparses its input twice (the document it returns and
    the copy it digests), and rebuilds the same ``ds:`` tag names a dozen times. The tree handed
    here was just parsed by :func:`~lienthong.xmlsafe.parse_xml` and is not shared, so it is
    digested in place while the signature is built in a scratch holder (see
    :func:`sign_package`), and the tag names are built once. It holds no per-call state, so one
    instance per algorithm serves every thread.
    """

    def get_root(self, data: object) -> etree._Element:
        if not isinstance(data, _Unsigned):
            raise TypeError("the package signer only signs trees prepared by sign_package")
        if not data.roots:
            raise RuntimeError("signxml asked for the document more often than expected")
        return data.roots.pop(0)

    def _ds_tag(self, tag: str) -> etree.QName:
        name = _DS_TAGS.get(tag)
        if name is None:
            name = _DS_TAGS.setdefault(tag, etree.QName(_tree.DSIG_NS, tag))
        return name


_DS_TAGS: dict[str, etree.QName] = {}

_SIGNERS = {
    name: _Signer(
        signature_algorithm=method,
        digest_algorithm="http://www.w3.org/2001/04/xmlenc#sha256",
        c14n_algorithm=_tree.EXC_C14N,
    )
    for name, method in ALGORITHMS.items()
}


class AlreadySigned(PeerInputError):
    """The package already carries a signature and replacing it was not asked for."""


def sign_package(
    data: bytes,
    identity: SigningIdentity,
    *,
    algorithm: str | None = None,
    replace: bool = False,
) -> bytes:
    """Return ``data`` signed by ``identity`` (UTF-8, with an XML declaration).

    ``algorithm`` is a key of :data:`ALGORITHMS` and must fit the key (``rsa-*`` for RSA keys,
    ``ecdsa-*`` for EC keys); by default RSA-SHA256 for an RSA key, ECDSA-SHA256 for an EC
    key. A package that is already signed is refused with
    :class:`AlreadySigned` unless ``replace`` is true, in which case the old signatures are
    removed first. Bad XML raises :class:`~lienthong.errors.XmlRefused`, a package without
    ``edXMLEnvelope/edXMLHeader`` :class:`~lienthong.errors.PeerInputError`.
    """
    algorithm = choose_algorithm(identity, algorithm)
    root = parse_xml(data)
    existing = _tree.signatures(root)
    if existing and not replace:
        raise already_signed(len(existing))
    for old in existing:
        _remove_keeping_tail(old)
    if root.get("Id") is not None or root.get("ID") is not None:
        # signxml would then sign "#<Id>" instead of the whole document (URI="").
        raise PeerInputError(ROOT_ID)
    header = _header(root)
    # signxml cuts the placeholder out of root before digesting it, appending the text that
    # followed it to the text before, as the enveloped-signature transform will when verifying.
    # It builds the signature in a placeholder of its own, in a holder, which then takes the
    # place of ours with the text split back around it. Exclusive C14N of SignedInfo takes
    # nothing from the ancestors, so its canonical form (what is signed) is the same in both.
    placeholder = _placeholder()
    holder = etree.Element("holder")
    holder.append(_placeholder())
    anchor = _tree.child(header, "TraceHeaderList")
    if anchor is None:
        anchor = _tree.child(header, "MessageHeader")
    tail = None if anchor is None else anchor.tail
    if anchor is None:
        header.append(placeholder)
    else:
        placeholder.tail = tail
        anchor.addnext(placeholder)
    try:
        _SIGNERS[algorithm].sign(
            _Unsigned(holder, root), key=identity.key, key_info=key_info(identity)
        )
    except InvalidInput as exc:
        raise PeerInputError(f"the package cannot be signed: {exc}") from exc
    signature = holder[0]
    if anchor is None:
        header.append(signature)
    else:
        anchor.tail = signature.tail = tail
        anchor.addnext(signature)
    out: bytes = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return out


def choose_algorithm(identity: SigningIdentity, algorithm: str | None) -> str:
    """The short name of the signature algorithm to use with ``identity``'s key (see
    :func:`sign_package`); :class:`ValueError` when it is unknown or does not fit the key."""
    key_is_ec = isinstance(identity.key, ec.EllipticCurvePrivateKey)
    if algorithm is None:
        algorithm = "ecdsa-sha256" if key_is_ec else "rsa-sha256"
    if algorithm not in ALGORITHMS:
        choices = ", ".join(sorted(ALGORITHMS))
        raise ValueError(f"unknown signature algorithm {algorithm!r}; use one of {choices}")
    if key_is_ec == algorithm.startswith("rsa-"):
        kind = "EC" if key_is_ec else "RSA"
        raise ValueError(f"algorithm {algorithm} does not fit the {kind} key")
    return algorithm


def _placeholder() -> etree._Element:
    """The empty ``ds:Signature`` that tells signxml where the signature goes."""
    return etree.Element(_DS_SIGNATURE, Id="placeholder", nsmap={"ds": _tree.DSIG_NS})


def key_info(identity: SigningIdentity) -> etree._Element:
    """``ds:KeyInfo/ds:X509Data`` with the identity's certificates, leaf first."""
    key_info = etree.Element(_DS_KEY_INFO, nsmap={"ds": _tree.DSIG_NS})
    x509_data = etree.SubElement(key_info, _DS_X509_DATA)
    for text in identity.certificates_base64:
        etree.SubElement(x509_data, _DS_X509_CERTIFICATE).text = text
    return key_info


_DS_SIGNATURE = etree.QName(_tree.DSIG_NS, "Signature")
_DS_KEY_INFO = etree.QName(_tree.DSIG_NS, "KeyInfo")
_DS_X509_DATA = etree.QName(_tree.DSIG_NS, "X509Data")
_DS_X509_CERTIFICATE = etree.QName(_tree.DSIG_NS, "X509Certificate")


NO_HEADER = "the package has no edXMLEnvelope/edXMLHeader to hold the signature"
ROOT_ID = 'the edXML root element carries an Id attribute; cannot sign URI=""'


def already_signed(count: int) -> AlreadySigned:
    """The refusal of a package that carries ``count`` signatures."""
    return AlreadySigned(
        f"the package is already signed ({count} signature(s)); "
        "refusing to replace a signature unless asked to"
    )


def _header(root: etree._Element) -> etree._Element:
    envelope = _tree.child(root, "edXMLEnvelope")
    header = _tree.child(envelope, "edXMLHeader") if envelope is not None else None
    if header is None:
        raise PeerInputError(NO_HEADER)
    return header


def _remove_keeping_tail(element: etree._Element) -> None:
    parent = element.getparent()
    if parent is None:
        raise PeerInputError("the package root is a Signature, not an edXML document")
    previous = element.getprevious()
    if element.tail:
        if previous is not None:
            previous.tail = (previous.tail or "") + element.tail
        else:
            parent.text = (parent.text or "") + element.tail
    parent.remove(element)
