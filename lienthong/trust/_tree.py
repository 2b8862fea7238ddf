"""XPath helpers over edXML trees, tolerant of prefixes and producers' namespace choices."""

from __future__ import annotations

from lxml import etree

DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
EDXML_NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
EXC_C14N = "http://www.w3.org/2001/10/xml-exc-c14n#"

# Signature in the DSig namespace, or in the edXML one as some producers emit it (spec section 1).
_SIGNATURES = etree.XPath(
    "//*[local-name()='Signature' and (namespace-uri()=$ds or namespace-uri()=$ed)]"
)
_HEADERS = etree.XPath("//*[local-name()='MessageHeader' or local-name()='Status']")
_SENDER = etree.XPath(
    "//*[local-name()='MessageHeader' or local-name()='Status']"
    "/*[local-name()='From']/*[local-name()='OrganId']"
)
_CHILD = etree.XPath("*[local-name()=$name]")


def signatures(root: etree._Element) -> list[etree._Element]:
    """Every Signature element of the document, in either namespace."""
    found = _SIGNATURES(root, ds=DSIG_NS, ed=EDXML_NS)
    assert isinstance(found, list)
    return [e for e in found if isinstance(e, etree._Element)]


def message_headers(root: etree._Element) -> list[etree._Element]:
    """Every MessageHeader (or Status, as one producer names it) of the document."""
    found = _HEADERS(root)
    assert isinstance(found, list)
    return [e for e in found if isinstance(e, etree._Element)]


def sender(root: etree._Element) -> str | None:
    """The trimmed text of MessageHeader/From/OrganId, or None when absent or empty."""
    found = _SENDER(root)
    assert isinstance(found, list)
    for e in found:
        if isinstance(e, etree._Element) and e.text and e.text.strip():
            return e.text.strip()
    return None


def child(parent: etree._Element, name: str) -> etree._Element | None:
    """The first child of ``parent`` with local name ``name``, whatever its namespace."""
    found = _CHILD(parent, name=name)
    assert isinstance(found, list)
    first = found[0] if found else None
    return first if isinstance(first, etree._Element) else None
