"""Validate a package in a file without holding it: its attachments are read in pieces.

What makes a package large is its attachments' base64 text; everything else (the header, the
manifest, the signature) is small. :func:`validate_file` reads the file once as a stream of XML
events (:mod:`lienthong.xmlstream`, which refuses what :func:`~lienthong.xmlsafe.parse_xml`
refuses). The base64 text of each ``ContentTransferEncoded`` element is decoded in pieces as it
goes by (so a text that is not base64 is found, with its path), hashed, and, when asked, written
decoded to a file of the caller's; it is never held whole. The bytes outside that text make the
package's *outline*: the same document with each attachment's text replaced by a few bytes of
base64, checked by :func:`~lienthong.edxml.validate.validate` exactly as a package in memory
is (schema, rules, model). So the findings are the same, and the model is the package's with
each attachment's ``content`` a placeholder: its real size and digest are in
:class:`EncodedText`.

Where this cannot decide safely it refuses with the reason rather than load the package: an
outline over :data:`MAX_OUTLINE` bytes (text other than attachments that large), or markup
inside an attachment's text (an element where base64 should be). A zipped attachment is kept
as it came (not unzipped, as :func:`~lienthong.edxml.parse.parse` does in memory).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from lienthong.edxml.validate import Problem, ValidationResult, validate
from lienthong.errors import XmlRefused
from lienthong.xmlsafe import DEFAULT_MAX_BYTES
from lienthong.xmlstream import Name, XmlStream, open_package

__all__ = [
    "LARGE_PACKAGE",
    "MAX_OUTLINE",
    "PLACEHOLDER",
    "EncodedText",
    "FileValidation",
    "validate_file",
]

LARGE_PACKAGE = 8 * 1024 * 1024
"""Packages larger than this are read from their file in pieces; smaller ones in memory
(faster: one parse by libxml2)."""

MAX_OUTLINE = 16 * 1024 * 1024
"""Most bytes of a package outside its attachments' base64 that a file is validated with."""

PLACEHOLDER = b"AAAA"
"""What stands for an attachment's base64 text in the outline: three zero bytes."""

_ENCODED = "ContentTransferEncoded"
_WHITESPACE = b" \t\r\n"


@dataclass(frozen=True, slots=True)
class EncodedText:
    """One attachment's base64 text in the file: its byte range (``start`` to ``end``, the
    element's content), and the decoded bytes' size and sha256 (hex)."""

    path: str
    start: int
    end: int
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class FileValidation:
    """The findings on a package in a file (as :func:`validate` gives them for bytes, base64
    that cannot be decoded included), and its attachments' text in document order."""

    result: ValidationResult
    attachments: tuple[EncodedText, ...] = field(default_factory=tuple)


class _Base64:
    """Decodes base64 given in pieces, whitespace anywhere, as ``b64decode(validate=True)``
    of the joined text would: refuses other characters, padding before the end, and a length
    that is not a multiple of four."""

    def __init__(self, out: BinaryIO | None) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0
        self.error: str | None = None
        self._rest = b""
        self._ended = False  # padding seen: nothing may follow

    def feed(self, text: bytes) -> None:
        if self.error is not None:
            return
        text = self._rest + text.translate(None, _WHITESPACE)
        whole = len(text) - len(text) % 4
        self._rest = text[whole:]
        if not whole:
            return
        if self._ended:
            self.error = "base64 text goes on after its padding"
            return
        try:
            data = base64.b64decode(text[:whole], validate=True)
        except (binascii.Error, ValueError) as exc:
            self.error = f"the attachment is not valid base64 ({exc})"
            return
        self._ended = text[whole - 1 : whole] == b"="
        self.sha.update(data)
        self.size += len(data)
        if self.out is not None:
            self.out.write(data)

    def close(self) -> None:
        if self.error is None and self._rest:
            self.error = "the attachment is not valid base64 (its length is not a multiple of four)"


class _Scan:
    """Finds each attachment's text, decoding it; records where it is."""

    def __init__(self, sink: Callable[[int], BinaryIO | None]) -> None:
        self.stream: XmlStream | None = None
        self.sink = sink
        self.names: list[str] = []
        self.counts: list[dict[str, int]] = [{}]
        self.texts: list[tuple[str, int, int, _Base64]] = []
        self.problems: list[Problem] = []
        self._open: tuple[str, int, _Base64] | None = None  # path, start tag position, decoder

    def _path(self) -> str:
        return "/".join(self.names[1:]) or "edXML"

    def start(self, name: Name, attributes: list[tuple[Name, str]]) -> None:
        if self._open is not None:
            raise XmlRefused(
                "malformed",
                f"<{name.local}> inside the attachment text at {self._open[0]}:"
                " streaming validation reads only text there",
            )
        counts = self.counts[-1]
        counts[name.local] = counts.get(name.local, 0) + 1
        label = name.local if counts[name.local] == 1 else f"{name.local}[{counts[name.local]}]"
        self.names.append(label)
        self.counts.append({})
        if name.local == _ENCODED:
            assert self.stream is not None
            out = self.sink(len(self.texts))
            self._open = (self._path(), self.stream.position, _Base64(out))

    def end(self, name: Name) -> None:
        if self._open is not None:
            path, start, decoder = self._open
            assert self.stream is not None
            decoder.close()
            if decoder.error is not None:
                self.problems.append(Problem(path, decoder.error))
            self.texts.append((path, start, self.stream.position, decoder))
            self._open = None
        self.names.pop()
        self.counts.pop()

    def text(self, text: str) -> None:
        if self._open is not None:
            self._open[2].feed(text.encode("utf-8", "replace"))

    def plain(self, data: bytes | memoryview) -> None:
        if self._open is not None:
            self._open[2].feed(bytes(data))

    def pi(self, target: str, data: str) -> None:
        pass

    def comment(self, text: str) -> None:
        pass


def _tag_end(source: BinaryIO, start: int) -> int:
    """The offset just past the start tag beginning at ``start`` (quotes respected)."""
    source.seek(start)
    quote = 0
    offset = start
    while piece := source.read(65536):
        for i, byte in enumerate(piece):
            if quote:
                if byte == quote:
                    quote = 0
            elif byte in (0x22, 0x27):
                quote = byte
            elif byte == 0x3E:  # ">"
                return offset + i + 1
        offset += len(piece)
    raise XmlRefused("malformed", "a start tag does not end")


def validate_file(
    path: Path,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    decode_to: Callable[[int], BinaryIO | None] = lambda index: None,
    max_outline: int = MAX_OUTLINE,
) -> FileValidation:
    """Validate the package in ``path`` reading it in pieces (see the module docstring).

    ``decode_to(i)`` gives a file to write the ``i``-th attachment's decoded bytes to (None:
    only check them); the caller closes it. Refusals of the XML (too large, malformed, a
    DOCTYPE) are one problem at ``/``, as :func:`validate` gives them.
    """
    scan = _Scan(decode_to)
    try:
        with open_package(path, max_bytes) as source:
            stream = XmlStream(scan)
            scan.stream = stream
            stream.read(source, max_bytes=max_bytes)
            outline = _outline(source, scan, max_outline)
    except XmlRefused as exc:
        return FileValidation(ValidationResult((Problem("/", str(exc)),), refusal=exc.reason))
    result = validate(outline, max_bytes=max_bytes)
    said = {p.path for p in result.problems}
    extra = tuple(p for p in scan.problems if p.path not in said)
    if extra:
        result = ValidationResult((*result.problems, *extra), None, deviations=result.deviations)
    attachments = tuple(
        EncodedText(where, start, end, decoder.size, decoder.sha.hexdigest())
        for where, start, end, decoder in scan.texts
    )
    return FileValidation(result, attachments)


def _outline(source: BinaryIO, scan: _Scan, max_outline: int) -> bytes:
    """The document with each attachment's text replaced by :data:`PLACEHOLDER`."""
    cuts: list[tuple[int, int | None]] = []
    for _, start, end, _ in scan.texts:
        content = _tag_end(source, start)
        if content < end:  # an element with text (not empty, not self-closing)
            cuts.append((content, end))
    source.seek(0, 2)
    cuts.append((source.tell(), None))
    parts: list[bytes] = []
    kept = 0
    offset = 0
    for begin, stop in cuts:
        kept += begin - offset
        if kept > max_outline:
            raise XmlRefused(
                "too-large",
                f"the package holds over {max_outline} bytes besides its attachments'"
                " base64; streaming validation does not hold that much",
            )
        source.seek(offset)
        parts.append(source.read(begin - offset))
        if stop is None:
            break
        parts.append(PLACEHOLDER)
        offset = stop
    return b"".join(parts)
