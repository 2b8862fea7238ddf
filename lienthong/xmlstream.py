"""Parse untrusted XML as a stream of events, in memory bounded by the chunk size.

:func:`lienthong.xmlsafe.parse_xml` builds a tree, which holds a package's attachment (one
base64 text node) whole. This module reads the same documents piece by piece and hands each
event to a :class:`StreamHandler`: element starts with their namespace prefix as written, ends,
text in pieces, processing instructions, comments. It refuses what ``parse_xml`` refuses (any
DOCTYPE, nesting deeper than the limit, malformed XML, more bytes than the limit) with the same
:class:`~lienthong.errors.XmlRefused` reasons, and two things only a stream has to care about:
an encoding other than UTF-8 (``encoding``), and a single piece of markup (a tag, a comment, a
processing instruction) longer than :data:`MAX_MARKUP`, which would have to be held whole
(``too-large``).

The parser is expat (the standard library's ``pyexpat``), not libxml2: lxml's event interface
reports names as ``{uri}local`` and drops the prefix the document used, and it tells no byte
positions. Exclusive canonicalisation writes prefixes (edXML binds the same namespace to the
default and to ``edXML:``, so the prefix cannot be inferred), and inserting a signature into a
file needs the byte where it goes; expat gives both.

expat scans character data at about a quarter of SHA-256's speed, so long runs of plain text (an
attachment's base64) are passed by it: when expat has just reported character data ending
exactly at the first byte of a run of *plain* bytes (printable ASCII other than ``& < > ]``,
tab, line feed, carriage return), the parser is in element content with nothing pending, and
every following plain byte can only be more of the same text. Those bytes go to the handler as
:meth:`StreamHandler.plain` without passing through expat; expat resumes at the next byte that
is not plain, as if it had read the run itself. The check is exact, so a run inside a comment,
an attribute value or a CDATA section is read by expat as usual (slower, never wrong).
"""

from __future__ import annotations

import pyexpat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol

from lienthong.errors import XmlRefused
from lienthong.xmlsafe import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH

CHUNK = 1 << 20
"""Bytes read from a file at a time."""

MAX_MARKUP = 8 << 20
"""Longest single piece of markup (tag, comment, processing instruction) accepted, in bytes."""

_MIN_RUN = 512
"""Shortest run of plain bytes worth passing by expat."""

_SEP = "\x01"  # namespace separator: a character XML forbids, so names split unambiguously

# Plain bytes: text that means itself in element content and in canonical form (except line
# ends, normalised here), with nothing that could start or end markup.
_PLAIN = set(b"\t\n\r") | set(range(0x20, 0x7F))
_PLAIN -= set(b"<&>]")
_MARKS = bytes(0x2E if b in _PLAIN else 0x21 for b in range(256))  # "." plain, "!" not
_RUN = b"." * _MIN_RUN


class Name(NamedTuple):
    """An element or attribute name: namespace URI ("" for none), local name, prefix as
    written ("" for none or the default namespace)."""

    uri: str
    local: str
    prefix: str


class StreamHandler(Protocol):
    """What :class:`XmlStream` reports to, in document order."""

    def start(self, name: Name, attributes: list[tuple[Name, str]]) -> None:
        """An element starts; ``attributes`` exclude namespace declarations."""

    def end(self, name: Name) -> None:
        """The element started last ends."""

    def text(self, text: str) -> None:
        """Character data (entities and references resolved, line ends normalised); a text
        node arrives in any number of pieces."""

    def plain(self, data: bytes | memoryview) -> None:
        """Character data given as bytes of the plain set (see the module docstring), line
        ends already normalised: ASCII that reads the same as text and as canonical XML."""

    def pi(self, target: str, data: str) -> None:
        """A processing instruction (the XML declaration is not one)."""

    def comment(self, text: str) -> None:
        """A comment."""


def _name(raw: str) -> Name:
    parts = raw.split(_SEP)
    if len(parts) == 1:
        return Name("", raw, "")
    if len(parts) == 2:
        return Name(parts[0], parts[1], "")
    return Name(parts[0], parts[1], parts[2])


class XmlStream:
    """Feed a document in pieces; events go to ``handler`` as soon as they are read.

    Raises :class:`~lienthong.errors.XmlRefused` from :meth:`feed` or :meth:`close` (see the
    module docstring for the reasons). :attr:`position` is the byte offset in the document of
    the event being reported, for handlers that need to know where things are.
    """

    def __init__(self, handler: StreamHandler, *, max_depth: int = DEFAULT_MAX_DEPTH) -> None:
        self._handler = handler
        self._max_depth = max_depth
        self._depth = 0
        self._expat = p = pyexpat.ParserCreate(encoding="UTF-8", namespace_separator=_SEP)
        p.namespace_prefixes = True
        p.ordered_attributes = True
        p.buffer_text = False
        if hasattr(p, "SetReparseDeferralEnabled"):  # expat 2.6: report data as it arrives
            p.SetReparseDeferralEnabled(False)
        p.XmlDeclHandler = self._xml_decl
        p.StartDoctypeDeclHandler = self._doctype
        p.StartElementHandler = self._start
        p.EndElementHandler = self._end
        p.CharacterDataHandler = self._text
        p.ProcessingInstructionHandler = self._pi
        p.CommentHandler = self._comment
        p.StartCdataSectionHandler = self._cdata_start
        p.EndCdataSectionHandler = self._cdata_end
        self._fed = 0  # bytes given to expat
        self._skipped = 0  # plain bytes passed by it
        self._in_cdata = False
        self._last_text: tuple[int, str] | None = None  # expat index and text of the last event
        self._run = False  # inside a run passed by expat, across chunks
        self._cr = False  # a carriage return held back at the end of a run

    @property
    def position(self) -> int:
        """Byte offset of the current event in the document."""
        return self._expat.CurrentByteIndex + self._skipped

    def feed(self, chunk: bytes) -> None:
        """Parse the next piece of the document."""
        if not self._fed and not self._skipped and chunk[:1] in (b"\x00", b"\xfe", b"\xff"):
            raise XmlRefused("encoding", "the package is not UTF-8; streaming reads UTF-8 only")
        view = memoryview(chunk)
        marks = chunk.translate(_MARKS)
        size = len(chunk)
        pos = 0
        if self._run:
            pos = self._continue_run(chunk, view, marks, 0)
        while pos < size:
            start = marks.find(_RUN, pos)
            if start < 0:
                self._parse(view[pos:])
                break
            self._parse(view[pos : start + 1])
            end = marks.find(b"!", start)
            end = size if end < 0 else end
            if self._text_ends_here():
                pos = self._continue_run(chunk, view, marks, start + 1)
            else:
                self._parse(view[start + 1 : end])
                pos = end

    def close(self) -> None:
        """End of the document: raises if it is incomplete."""
        self._end_run(b"")
        self._parse(b"", final=True)

    def read(
        self,
        source: BinaryIO,
        *,
        max_bytes: int = DEFAULT_MAX_BYTES,
        chunk_size: int = CHUNK,
        then: Callable[[bytes, int], object] | None = None,
    ) -> int:
        """Feed ``source`` to its end in pieces of ``chunk_size``, then :meth:`close`.

        Returns the number of bytes read. Refuses a document longer than ``max_bytes`` as soon
        as that many bytes have been read, an empty one as ``malformed``. ``then`` is called
        with each piece and the number of bytes read so far, once the piece has been parsed.
        """
        total = 0
        while chunk := source.read(chunk_size):
            total += len(chunk)
            if total > max_bytes:
                raise XmlRefused("too-large", f"the package is over the limit of {max_bytes} bytes")
            self.feed(chunk)
            if then is not None:
                then(chunk, total)
        if not total:
            raise XmlRefused("malformed", "the package is empty")
        self.close()
        return total

    def _continue_run(self, chunk: bytes, view: memoryview, marks: bytes, pos: int) -> int:
        """Pass plain bytes from ``pos`` to the handler; return where the run stops."""
        end = marks.find(b"!", pos)
        stop = len(view) if end < 0 else end
        piece = view[pos:stop]
        self._skipped += stop - pos
        self._run = True
        if self._cr or chunk.find(b"\r", pos, stop) >= 0:
            data = (b"\r" if self._cr else b"") + chunk[pos:stop]
            self._cr = data.endswith(b"\r")
            if self._cr:
                data = data[:-1]
            piece = memoryview(data.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        if piece:
            self._handler.plain(piece)
        if end >= 0:
            self._end_run(view[end : end + 1])
        return stop

    def _end_run(self, following: bytes | memoryview) -> None:
        if self._cr:
            # A carriage return not followed by a line feed is a line end of its own.
            self._cr = False
            if following[:1] != b"\n":
                self._handler.plain(b"\n")
        self._run = False

    def _text_ends_here(self) -> bool:
        """True when expat's last event was character data ending at the last byte fed."""
        if self._last_text is None or self._in_cdata:
            return False
        index, text = self._last_text
        return index + len(text.encode("utf-8")) == self._fed

    def _parse(self, data: bytes | memoryview, final: bool = False) -> None:
        self._fed += len(data)
        try:
            self._expat.Parse(data, final)
        except pyexpat.ExpatError as exc:
            where = pyexpat.ErrorString(exc.code) if exc.code else str(exc)
            at = (self._expat.ErrorByteIndex or 0) + self._skipped
            raise XmlRefused(
                "malformed", f"the package is not well-formed XML: {where} (at byte {at})"
            ) from None
        if self._fed - self._expat.CurrentByteIndex > MAX_MARKUP:
            raise XmlRefused(
                "too-large",
                f"a single tag, comment or processing instruction is longer than {MAX_MARKUP}"
                " bytes; streaming does not hold markup that large",
            )

    # expat callbacks

    def _xml_decl(self, version: str | None, encoding: str | None, standalone: int) -> None:
        if encoding is not None and encoding.upper().replace("_", "-") not in ("UTF-8", "UTF8"):
            raise XmlRefused(
                "encoding", f"the package is encoded in {encoding}; streaming reads UTF-8 only"
            )

    def _doctype(self, *_: object) -> None:
        raise XmlRefused("dtd", "the XML declares a DOCTYPE or entities, which are not allowed")

    def _start(self, raw: str, attrs: list[str]) -> None:
        self._last_text = None
        self._depth += 1
        name = _name(raw)
        if self._depth > self._max_depth:
            raise XmlRefused(
                "too-deep",
                f"the XML nests elements deeper than {self._max_depth} levels (at <{name.local}>)",
            )
        self._handler.start(
            name, [(_name(attrs[i]), attrs[i + 1]) for i in range(0, len(attrs), 2)]
        )

    def _end(self, raw: str) -> None:
        self._last_text = None
        self._depth -= 1
        self._handler.end(_name(raw))

    def _text(self, text: str) -> None:
        self._last_text = (self._expat.CurrentByteIndex, text)
        self._handler.text(text)

    def _pi(self, target: str, data: str) -> None:
        self._last_text = None
        self._handler.pi(target, data)

    def _comment(self, text: str) -> None:
        self._last_text = None
        self._handler.comment(text)

    def _cdata_start(self) -> None:
        self._last_text = None
        self._in_cdata = True

    def _cdata_end(self) -> None:
        self._last_text = None
        self._in_cdata = False


@contextmanager
def open_package(path: Path, max_bytes: int) -> Iterator[BinaryIO]:
    """Open a package file for reading, refusing it as ``too-large`` from its size alone."""
    with path.open("rb") as source:
        size = path.stat().st_size
        if size > max_bytes:
            raise XmlRefused(
                "too-large", f"the package is {size} bytes, over the limit of {max_bytes} bytes"
            )
        yield source
