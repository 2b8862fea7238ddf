"""Validation of a package in a file, read in pieces: the same findings as in memory."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import pytest

from lienthong.devnet.bigpackage import write_large_package
from lienthong.edxml import EdocPackage, validate
from lienthong.edxml.streamed import validate_file

DATA = Path(__file__).parent / "data"
CORPUS = sorted(p for p in DATA.glob("*.xml") if not p.name.startswith("hostile_zip"))


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_findings_match_validation_in_memory(path: Path) -> None:
    """Every package of the corpus gets the same errors, deviations and model header from the
    file read in pieces as from its bytes (zipped attachments aside, kept as they came)."""
    in_memory = validate(path.read_bytes())
    streamed = validate_file(path).result
    assert {p.path for p in streamed.problems} == {p.path for p in in_memory.problems}
    assert [str(p) for p in streamed.deviations] == [str(p) for p in in_memory.deviations]
    if in_memory.package is not None and not in_memory.problems:
        assert streamed.package is not None
        assert streamed.package.document_id == in_memory.package.document_id
        assert streamed.package.sender == in_memory.package.sender


def test_attachment_is_decoded_in_pieces_to_the_file_given(tmp_path: Path) -> None:
    """A 3 MB attachment, base64 in CRLF lines, is decoded to the caller's file with its size
    and sha256 reported; the model keeps a placeholder, not the attachment."""
    big = tmp_path / "big.xml"
    digest = write_large_package(
        (DATA / "edoc_valid.xml").read_bytes(), big, 3_000_000, line_ending=b"\r\n"
    )
    out = io.BytesIO()
    checked = validate_file(big, decode_to=lambda index: out)
    assert checked.result.ok
    (text,) = checked.attachments
    assert (text.size, text.sha256) == (3_000_000, digest)
    assert hashlib.sha256(out.getvalue()).hexdigest() == digest
    pkg = checked.result.package
    assert isinstance(pkg, EdocPackage)
    assert len(pkg.attachments[0].content) < 10


def test_attachment_that_is_not_base64_is_an_error_with_its_path(tmp_path: Path) -> None:
    """Text that does not decode, or that goes on after its padding, is an error naming the
    attachment, as in memory."""
    valid = (DATA / "edoc_valid.xml").read_bytes()
    for bad in (b"QUJD!!!!", base64.b64encode(b"ab") + base64.b64encode(b"cd")):
        start = valid.index(b"ContentTransferEncoded>") + len(b"ContentTransferEncoded>")
        end = valid.index(b"</", start)
        path = tmp_path / "bad.xml"
        path.write_bytes(valid[:start] + bad + valid[end:])
        result = validate_file(path).result
        assert any("ContentTransferEncoded" in p.path for p in result.problems), result.problems


def test_element_inside_attachment_text_is_refused(tmp_path: Path) -> None:
    """Markup where only base64 belongs cannot be validated in pieces: refused, saying so."""
    valid = (DATA / "edoc_valid.xml").read_bytes()
    start = valid.index(b"ContentTransferEncoded>") + len(b"ContentTransferEncoded>")
    path = tmp_path / "odd.xml"
    path.write_bytes(valid[:start] + b"QUJD<x/>" + valid[start:])
    result = validate_file(path).result
    assert result.package is None
    assert "inside the attachment text" in str(result.problems[0])


def test_outline_over_the_limit_is_refused(tmp_path: Path) -> None:
    """A package whose text outside attachments is over the outline limit is refused rather
    than held."""
    path = DATA / "edoc_valid.xml"
    result = validate_file(path, max_outline=1000).result
    assert result.package is None
    assert "besides its attachments" in str(result.problems[0])
