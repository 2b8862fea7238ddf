"""Parse untrusted XML without letting it cost anything.

Every XML byte string that comes from outside (office software, a neighbour node, a file on
disk) is parsed here and nowhere else. The parser resolves no entities, loads no DTD, touches no
network, and refuses any document type declaration outright, so billion-laughs and external
entity attacks fail before expansion. A size limit is checked before parsing starts and a depth
limit on the parsed tree, by one XPath walk in C: a Python callback per element would cost twice
the parse itself. libxml2's own depth cap still bounds how deep the parser goes, and the size
limit how much it reads, so checking after the parse costs nothing a valid package of the same
size would not. When a document is both too deep and ill-formed, it is parsed again event by
event so that the reason given is whichever problem comes first, as a streaming check would.

``huge_tree`` is on because legitimate packages carry attachments as one base64 text node that
can pass libxml2's 10 MB text limit; our own size and depth limits take the place of its caps.
"""

from __future__ import annotations

import io
import threading
from functools import lru_cache
from typing import TypedDict

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
    head = bytes(data[:4096]).upper()
    if b"<!DOCTYPE" in head or b"<!ENTITY" in head:
        raise XmlRefused("dtd", "the XML declares a DOCTYPE or entities, which are not allowed")
    try:
        root = etree.fromstring(bytes(data), _parser())
    except etree.XMLSyntaxError as exc:
        _refuse_if_too_deep_first(data, max_depth)
        raise XmlRefused("malformed", f"the package is not well-formed XML: {exc}") from exc
    # lxml-stubs does not declare DocInfo.doctype, hence getattr.
    if getattr(root.getroottree().docinfo, "doctype", ""):
        raise XmlRefused("dtd", "the XML declares a DOCTYPE, which is not allowed")
    too_deep = _beyond(max_depth)(root)
    if too_deep:
        assert isinstance(too_deep, list)
        first = too_deep[0]
        assert isinstance(first, etree._Element)
        raise _too_deep(max_depth, first)
    return root


class _Options(TypedDict):
    resolve_entities: bool
    load_dtd: bool
    dtd_validation: bool
    no_network: bool
    huge_tree: bool


# Shared by the parser and the event-by-event diagnosis so that both read documents alike.
_OPTIONS = _Options(
    resolve_entities=False, load_dtd=False, dtd_validation=False, no_network=True, huge_tree=True
)
_LOCAL = threading.local()


def _parser() -> etree.XMLParser:
    """This thread's parser: lxml parsers keep state while parsing, so threads do not share
    one."""
    parser: etree.XMLParser | None = getattr(_LOCAL, "parser", None)
    if parser is None:
        parser = _LOCAL.parser = etree.XMLParser(**_OPTIONS)
    return parser


@lru_cache(maxsize=8)
def _beyond(max_depth: int) -> etree.XPath:
    """An XPath selecting, from the root, the elements nested deeper than ``max_depth``."""
    return etree.XPath("self::*" + "/*" * max_depth)


def _too_deep(max_depth: int, element: etree._Element) -> XmlRefused:
    return XmlRefused(
        "too-deep",
        f"the XML nests elements deeper than {max_depth} levels"
        f" (at <{etree.QName(element).localname}>)",
    )


def _refuse_if_too_deep_first(data: bytes, max_depth: int) -> None:
    """Raise ``too-deep`` if the nesting passes ``max_depth`` before the syntax error."""
    depth = 0
    events = etree.iterparse(io.BytesIO(bytes(data)), events=("start", "end"), **_OPTIONS)
    try:
        for event, element in events:
            depth += 1 if event == "start" else -1
            if depth > max_depth:
                raise _too_deep(max_depth, element)
    except etree.XMLSyntaxError:
        return
