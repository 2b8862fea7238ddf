"""Parse untrusted XML without letting it cost anything.

Every XML byte string that comes from outside (office software, a neighbour node, a file on
disk) is parsed here and nowhere else. The parser resolves no entities, loads no DTD, touches no
network, and refuses any document type declaration outright, so billion-laughs and external
entity attacks fail before expansion. A size limit is checked before parsing starts and a depth
limit while it runs (the parse stops at the first element too deep).

``huge_tree`` is on because legitimate packages carry attachments as one base64 text node that
can pass libxml2's 10 MB text limit; our own size and depth limits take the place of its caps.
"""

from __future__ import annotations

import io

from lxml import etree

from lienthong.errors import XmlRefused

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Largest package accepted by default (64 MiB), before any parsing."""

DEFAULT_MAX_DEPTH = 40
"""Deepest element nesting accepted by default; real edXML packages stay under 12."""


def parse_xml(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> etree._Element:
    """Parse ``data`` and return the root element, or raise :class:`XmlRefused`.

    Refusal reasons: ``too-large`` (more than ``max_bytes``), ``too-deep`` (nesting beyond
    ``max_depth``), ``dtd`` (any DOCTYPE, which is where entities and external references
    live), ``malformed`` (not well-formed XML, or empty).
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError("parse_xml takes bytes")
    size = len(data)
    if size > max_bytes:
        raise XmlRefused(
            "too-large", f"the package is {size} bytes, over the limit of {max_bytes} bytes"
        )
    if size == 0:
        raise XmlRefused("malformed", "the package is empty")
    # A DOCTYPE is refused without parsing it: checking the raw prefix first means an entity
    # bomb is never even declared to libxml2. The check after parsing catches encodings where
    # the marker is not ASCII bytes (UTF-16).
    head = bytes(data[:4096]).lstrip()
    if b"<!DOCTYPE" in head.upper() or b"<!ENTITY" in head.upper():
        raise XmlRefused("dtd", "the XML declares a DOCTYPE or entities, which are not allowed")
    depth = 0
    root: etree._Element | None = None
    try:
        events = etree.iterparse(
            io.BytesIO(bytes(data)),
            events=("start", "end"),
            resolve_entities=False,
            load_dtd=False,
            dtd_validation=False,
            no_network=True,
            huge_tree=True,
            remove_comments=False,
        )
        for event, element in events:
            if event == "start":
                depth += 1
                if depth > max_depth:
                    raise XmlRefused(
                        "too-deep",
                        f"the XML nests elements deeper than {max_depth} levels"
                        f" (at <{etree.QName(element).localname}>)",
                    )
                if root is None:
                    root = element
            else:
                depth -= 1
    except etree.XMLSyntaxError as exc:
        raise XmlRefused("malformed", f"the package is not well-formed XML: {exc}") from exc
    if root is None:
        raise XmlRefused("malformed", "the package holds no XML element")
    # lxml-stubs does not declare DocInfo.doctype, hence getattr.
    if getattr(root.getroottree().docinfo, "doctype", ""):
        raise XmlRefused("dtd", "the XML declares a DOCTYPE, which is not allowed")
    return root
