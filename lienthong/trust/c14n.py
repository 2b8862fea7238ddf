"""Exclusive XML Canonicalization 1.0 (without comments) of a document read as a stream.

This is the canonical form XML-DSig digests under the exc-c14n transform
(https://www.w3.org/TR/xml-exc-c14n/), written from :class:`lienthong.xmlstream.XmlStream`
events as they come, so that a package of any size is digested in memory bounded by the chunk
size. It is the same output as ``etree.tostring(tree, method="c14n", exclusive=True)`` (libxml2,
which signxml and xmlsec1 use), byte for byte; the agreement tests hold it to that.

The rules, as they apply to a whole document without DTD:

- no XML declaration, no comments, no whitespace outside the document element; a processing
  instruction outside it goes on a line of its own (``\\n`` after one before the root, before one
  after it);
- an element is always written as a start and an end tag, never ``<a/>``;
- a namespace declaration is written on an element only where the element's or one of its
  attributes' prefix uses it ("visibly utilises") and the nearest written ancestor did not
  already declare that prefix with that value; ``xmlns=""`` when an unprefixed element has no
  namespace but an ancestor wrote a default one; ``xml:`` is never declared;
- declarations in order of prefix (the default first), then attributes in order of namespace
  URI (none first) and local name, values in double quotes with ``& < "`` and tab, line feed,
  carriage return escaped as references;
- text with ``& < >`` and carriage return escaped; CDATA sections become escaped text.
"""

from __future__ import annotations

from collections.abc import Callable

from lienthong.xmlstream import Name

Write = Callable[[bytes | memoryview], object]


def _text(text: str) -> str:
    if "&" in text:
        text = text.replace("&", "&amp;")
    if "<" in text:
        text = text.replace("<", "&lt;")
    if ">" in text:
        text = text.replace(">", "&gt;")
    if "\r" in text:
        text = text.replace("\r", "&#xD;")
    return text


def _attribute(value: str) -> str:
    for raw, escaped in _ATTRIBUTE_ESCAPES:
        if raw in value:
            value = value.replace(raw, escaped)
    return value


_ATTRIBUTE_ESCAPES = (
    ("&", "&amp;"),
    ("<", "&lt;"),
    ('"', "&quot;"),
    ("\t", "&#x9;"),
    ("\n", "&#xA;"),
    ("\r", "&#xD;"),
)


def qualified_name(name: Name) -> str:
    """The name as written: ``prefix:local``, or ``local``."""
    return f"{name.prefix}:{name.local}" if name.prefix else name.local


class ExclusiveC14N:
    """A :class:`~lienthong.xmlstream.StreamHandler` writing the canonical form to ``write``.

    Fed a whole document, it writes the document's canonical form; fed the events of one
    element and its content (starting with that element's start), it writes that subtree's
    canonical form as exc-c14n defines it for a subtree: namespaces the ancestors declared are
    written where they are used, since nothing above is written.
    """

    def __init__(self, write: Write) -> None:
        self._write = write
        self._open: list[str] = []  # qualified names of the open elements
        # Namespaces written by the open elements, innermost last: prefix ("" default) -> URI.
        self._rendered: list[dict[str, str]] = [{}]
        self._root_done = False

    def start(self, name: Name, attributes: list[tuple[Name, str]]) -> None:
        """Write the start tag with the declarations it needs and its sorted attributes."""
        rendered = self._rendered[-1]
        new: dict[str, str] = {}
        if name.prefix != "xml" and rendered.get(name.prefix, "") != name.uri:
            new[name.prefix] = name.uri
        for attr, _ in attributes:
            prefix = attr.prefix
            if prefix and prefix != "xml" and rendered.get(prefix) != attr.uri:
                new[prefix] = attr.uri
        qname = qualified_name(name)
        parts = ["<", qname]
        if new:
            for prefix in sorted(new):
                uri = _attribute(new[prefix])
                parts.append(f' xmlns:{prefix}="{uri}"' if prefix else f' xmlns="{uri}"')
            rendered = {**rendered, **new}
        if attributes:
            ordered = sorted(attributes, key=lambda a: (a[0].uri, a[0].local))
            for attr, value in ordered:
                parts.append(f' {qualified_name(attr)}="{_attribute(value)}"')
        parts.append(">")
        self._write("".join(parts).encode())
        self._open.append(qname)
        self._rendered.append(rendered)

    def end(self, name: Name) -> None:
        """Write the end tag."""
        self._write(f"</{self._open.pop()}>".encode())
        self._rendered.pop()
        if not self._open:
            self._root_done = True

    def text(self, text: str) -> None:
        """Write character data, escaped; outside the document element there is none."""
        if self._open:
            self._write(_text(text).encode())

    def plain(self, data: bytes | memoryview) -> None:
        """Write plain character data as it is: it needs no escaping."""
        if self._open:
            self._write(data)

    def pi(self, target: str, data: str) -> None:
        """Write a processing instruction, on a line of its own outside the document element."""
        pi = f"<?{target} {data}?>" if data else f"<?{target}?>"
        if not self._open:
            pi = "\n" + pi if self._root_done else pi + "\n"
        self._write(pi.encode())

    def comment(self, text: str) -> None:
        """Comments are not part of the canonical form without comments."""
