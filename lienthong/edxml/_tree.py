"""The normalised tree: every producer variant rewritten to the one form we emit.

Received packages differ in prefixes, element order, the ``Business``/``Bussiness`` spelling,
the ``Status``/``MessageHeader`` wrapper and the namespace of ``Signature``. Rather than teach
every reader (the XSD, the rule checks, the model extraction) each variant, the received tree is
copied once into the canonical form: edXML elements in the edXML namespace under the prefix
``e`` (so XSD error paths read as names, not ``*[3]``), aliases renamed, children sorted into
the producers' order, and the signature replaced by an empty ``ds:Signature`` marker (its
content is the trust layer's business, not the format's).
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from lienthong.edxml._layout import DSIG_NS, NS, ORDER
from lienthong.errors import PeerInputError

_NSMAP = {"e": NS, "ds": DSIG_NS}


class PackageError(PeerInputError):
    """The XML is well-formed but no package can be read from it; the message names the field."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.problem = message


@dataclass(frozen=True, slots=True)
class Normalised:
    """The canonical copy of a received package and what the copy dropped."""

    root: etree._Element
    signed: bool


def _local(element: etree._Element) -> tuple[str | None, str]:
    qname = etree.QName(element)
    return qname.namespace, qname.localname


def normalise(root: etree._Element) -> Normalised:
    """Copy ``root`` into the canonical form; raise :class:`PackageError` if it is no edXML.

    ``root`` is consumed: the attachment payload elements are moved, not copied, into the new
    tree (copying megabytes of base64 text would cost more than parsing it did).
    """
    namespace, name = _local(root)
    if name != "edXML" or namespace not in (NS, None):
        raise PackageError("/", f"the root element is <{name}>, not <edXML> in namespace {NS}")
    new_root = etree.Element(f"{{{NS}}}edXML", nsmap=_NSMAP)
    signed = _copy_children(root, new_root, "edXML")
    return Normalised(new_root, signed)


def _copy_children(source: etree._Element, target: etree._Element, target_name: str) -> bool:
    signed = False
    for child in list(source):
        if not isinstance(child.tag, str):
            continue  # comments and processing instructions carry nothing
        namespace, name = _local(child)
        if name == "Signature" and namespace in (DSIG_NS, NS, None):
            etree.SubElement(target, f"{{{DSIG_NS}}}Signature")
            signed = True
            continue
        if namespace in (NS, None):
            if name == "Business":
                name = "Bussiness"
            elif name == "Status" and target_name == "edXMLHeader":
                name = "MessageHeader"
            tag = f"{{{NS}}}{name}"
        else:
            tag = child.tag
        if name == "ContentTransferEncoded" and not len(child):
            child.tag, child.tail = tag, None
            target.append(child)
            continue
        copy = etree.SubElement(target, tag)
        for key, value in child.attrib.items():
            if not str(key).startswith("{"):
                copy.set(key, value)
        copy.text = child.text
        signed |= _copy_children(child, copy, name)
    order = ORDER.get(target_name)
    if order is not None and len(target) > 1:
        rank = {f"{{{NS}}}{n}": i for i, n in enumerate(order)}
        rank[f"{{{DSIG_NS}}}Signature"] = rank.get(f"{{{NS}}}Signature", len(order))
        children = sorted(target, key=lambda c: rank.get(str(c.tag), len(order)))
        target[:] = children
    return signed


def path_of(element: etree._Element) -> str:
    """Readable path of a normalised element below the root, e.g. ``.../To[2]/OrganId``."""
    parts: list[str] = []
    node: etree._Element | None = element
    while node is not None and node.getparent() is not None:
        parent = node.getparent()
        assert parent is not None
        name = etree.QName(node).localname
        same = [c for c in parent if c.tag == node.tag]
        parts.append(f"{name}[{same.index(node) + 1}]" if len(same) > 1 else name)
        node = parent
    return "/".join(reversed(parts)) or "edXML"


def readable_xsd_path(libxml_path: str) -> str:
    """An XSD error path (``/e:edXML/e:edXMLEnvelope/...``) in the form :func:`path_of` gives."""
    parts = [p.rpartition(":")[2] for p in libxml_path.strip("/").split("/") if p]
    if parts and parts[0] == "edXML":
        parts = parts[1:]
    return "/".join(parts) or "edXML"
