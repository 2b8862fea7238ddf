"""The streaming XML reader: the refusals of parse_xml, positions, and long text passed by."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from lienthong.devnet.bigpackage import write_large_package
from lienthong.errors import XmlRefused
from lienthong.xmlstream import MAX_MARKUP, Name, XmlStream

DATA = Path(__file__).parent / "data"


class Recorder:
    """Keeps every event, with the stream's position for starts and ends."""

    def __init__(self) -> None:
        self.stream: XmlStream | None = None
        self.events: list[tuple[object, ...]] = []
        self.positions: dict[tuple[str, str], int] = {}
        self.plain_bytes = 0
        self.chars = ""

    def start(self, name: Name, attributes: list[tuple[Name, str]]) -> None:
        assert self.stream is not None
        self.events.append(("start", name, attributes))
        self.positions.setdefault(("start", name.local), self.stream.position)

    def end(self, name: Name) -> None:
        assert self.stream is not None
        self.events.append(("end", name))
        self.positions.setdefault(("end", name.local), self.stream.position)

    def text(self, text: str) -> None:
        self.chars += text

    def plain(self, data: bytes | memoryview) -> None:
        self.plain_bytes += len(data)
        self.chars += bytes(data).decode("ascii")

    def pi(self, target: str, data: str) -> None:
        self.events.append(("pi", target, data))

    def comment(self, text: str) -> None:
        self.events.append(("comment", text))


def read(data: bytes, chunk_size: int = 1 << 20) -> Recorder:
    """Run ``data`` through an XmlStream into a Recorder."""
    recorder = Recorder()
    recorder.stream = XmlStream(recorder)
    recorder.stream.read(io.BytesIO(data), chunk_size=chunk_size)
    return recorder


def test_names_carry_the_prefix_as_written() -> None:
    """The same URI as default and as edXML: is reported with the prefix each element used."""
    rec = read(b'<r xmlns="urn:e" xmlns:edXML="urn:e"><edXML:a edXML:k="1" k="2"/></r>')
    starts = [e for e in rec.events if e[0] == "start"]
    assert starts[0][1] == Name("urn:e", "r", "")
    assert starts[1][1] == Name("urn:e", "a", "edXML")
    assert starts[1][2] == [(Name("urn:e", "k", "edXML"), "1"), (Name("", "k", ""), "2")]


def test_positions_are_byte_offsets_of_tags() -> None:
    """Start and end positions point at the tags' first bytes, past multi-byte text."""
    data = "<r>Đà Nẵng<a>x</a ></r>".encode()
    rec = read(data, chunk_size=3)
    positions = rec.positions
    assert data[positions[("start", "a")] :].startswith(b"<a>")
    assert data[positions[("end", "a")] :].startswith(b"</a >")
    assert data[positions[("end", "r")] :].startswith(b"</r>")


@pytest.mark.parametrize("chunk_size", [999, 1 << 16, 1 << 20])
def test_attachment_text_goes_by_expat_in_pieces(tmp_path: Path, chunk_size: int) -> None:
    """Almost all of a long base64 text reaches the handler as plain pieces, intact."""
    path = tmp_path / "p.xml"
    write_large_package((DATA / "trust" / "edoc.xml").read_bytes(), path, 3_000_000)
    rec = read(path.read_bytes(), chunk_size)
    assert rec.plain_bytes > 3_900_000
    whole = path.read_bytes()
    start = whole.index(b"ContentTransferEncoded>") + len(b"ContentTransferEncoded>")
    base64_text = whole[start : whole.index(b"<", start)].decode()
    assert base64_text in rec.chars


def test_crlf_in_passed_text_is_normalised() -> None:
    """CR LF and lone CR in a long run become LF, also when cut between chunks."""
    body = (b"A" * 700 + b"\r\n") * 5 + b"B" * 600 + b"\r"
    data = b"<r>x" + body + b"</r>"
    for chunk_size in (701, 702, 1000, 1 << 20):
        rec = read(data, chunk_size)
        assert rec.chars == "x" + body.decode().replace("\r\n", "\n").replace("\r", "\n")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b'<!DOCTYPE r [<!ENTITY a "b">]><r>&a;</r>', "dtd"),
        (b"<a>" * 41 + b"</a>" * 41, "too-deep"),
        (b"<r><a></r>", "malformed"),
        (b"<r>&undefined;</r>", "malformed"),
        (b"", "malformed"),
        (b"<r>a]]>b</r>", "malformed"),
        (b"<r>" + b"A" * 2000 + b"\x01" + b"</r>", "malformed"),
        (b"<r>" + b"A" * 2000 + b"]]>" + b"</r>", "malformed"),
        (b'<?xml version="1.0" encoding="ISO-8859-1"?><r>\xe9</r>', "encoding"),
        ("<r/>".encode("utf-16"), "encoding"),
    ],
    ids=[
        "dtd",
        "deep",
        "unclosed",
        "entity",
        "empty",
        "cdata-end",
        "control",
        "run-cdata-end",
        "latin1",
        "utf16",
    ],
)
def test_refusals(data: bytes, reason: str) -> None:
    """What parse_xml refuses is refused, with the same reason token; other encodings too."""
    with pytest.raises(XmlRefused) as refused:
        read(data, chunk_size=997)
    assert refused.value.reason == reason


def test_markup_too_long_to_hold_is_refused() -> None:
    """A comment longer than MAX_MARKUP is refused before it is read whole."""
    data = b"<r><!--" + b"x" * (MAX_MARKUP + (2 << 20)) + b"--></r>"
    with pytest.raises(XmlRefused) as refused:
        read(data)
    assert refused.value.reason == "too-large"
    assert "longer than" in str(refused.value)


def test_more_bytes_than_the_limit_are_refused() -> None:
    """A document longer than max_bytes is refused as too-large while reading."""
    recorder = Recorder()
    stream = recorder.stream = XmlStream(recorder)
    with pytest.raises(XmlRefused) as refused:
        stream.read(io.BytesIO(b"<r>" + b"x" * 5000 + b"</r>"), max_bytes=4096, chunk_size=1000)
    assert refused.value.reason == "too-large"
