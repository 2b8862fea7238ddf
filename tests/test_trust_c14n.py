"""Streaming exclusive C14N agrees byte for byte with libxml2's (lxml, signxml, xmlsec1)."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from lienthong.devnet.bigpackage import write_large_package
from lienthong.errors import XmlRefused
from lienthong.trust import _tree, pki
from lienthong.trust.c14n import ExclusiveC14N
from lienthong.trust.keys import SigningIdentity
from lienthong.trust.sign import _remove_keeping_tail, sign_package
from lienthong.trust.stream import digest_file
from lienthong.xmlstream import XmlStream

DATA = Path(__file__).parent / "data"
_LXML = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=True)
CHUNKS = (1, 7, 4096, 1 << 20)


def lxml_c14n(data: bytes) -> bytes:
    """libxml2's exclusive C14N without comments of the document with its Signature removed
    (the enveloped-signature transform)."""
    root = etree.fromstring(data, _LXML)
    for signature in _tree.signatures(root):
        _remove_keeping_tail(signature)
    out: bytes = etree.tostring(
        root.getroottree(), method="c14n", exclusive=True, with_comments=False
    )
    return out


def stream_c14n(data: bytes, chunk_size: int) -> bytes:
    """Our canonical form of ``data`` read ``chunk_size`` bytes at a time (no Signature)."""
    out = io.BytesIO()
    XmlStream(ExclusiveC14N(out.write)).read(io.BytesIO(data), chunk_size=chunk_size)
    return out.getvalue()


def _corpus() -> list[Path]:
    files = sorted(DATA.glob("*.xml")) + sorted((DATA / "trust").glob("*.xml"))
    return [f for f in files if not f.name.startswith(("hostile_", "invalid_malformed"))]


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: p.name)
def test_corpus_digest_equals_lxml(path: Path) -> None:
    """Every sample package digests the same streamed (Signature left out) as by libxml2."""
    expected = hashlib.sha256(lxml_c14n(path.read_bytes())).digest()
    assert digest_file(path) == expected


@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_corpus_canonical_form_at_any_chunk_size(chunk_size: int) -> None:
    """The canonical bytes do not depend on how the file is cut into pieces."""
    for path in _corpus()[:12]:
        data = path.read_bytes()
        if b"Signature" in data:
            continue
        assert stream_c14n(data, chunk_size) == lxml_c14n(data), path.name


TRICKY = [
    # default namespace changed and undeclared; same URI under two prefixes
    b'<r xmlns="urn:a" xmlns:p="urn:a" xmlns:q="urn:b"><p:x><y xmlns=""><q:z/></y></p:x>'
    b'<x xmlns:unused="urn:u" q:at="1"/></r>',
    # attributes needing escapes, sorted by namespace then name, char references kept
    b'<r xmlns:b="urn:b" xmlns:a="urn:a" z="&quot;&lt;&amp;>&#9;&#10;&#13;" b:k="2" a:k="1"'
    b" a:a='x\ty\nz'/>",
    # text escapes, CR/LF normalisation, CDATA, character references
    b"<r>a &amp; b &lt; c > d\r\ne\rf&#13;g<![CDATA[<&>]]]]><![CDATA[>]]></r>",
    # PIs inside and outside, comments anywhere, whitespace outside the root
    b"<?xml version='1.0' encoding='utf-8'?>\n<?before x?>\n<!-- c -->\n<r><?in  data ?>"
    b"<!--x-->t<?empty?></r>\n<?after?>\n<!-- end -->\n",
    # Vietnamese text and names, xml: attributes (never declared)
    "<r xml:lang='vi' tên='Đà Nẵng'>Quảng Nam — Tam Kỳ ệ</r>".encode(),
    # prefixes redeclared deeper, and a prefix rebound to another URI
    b'<p:r xmlns:p="urn:1"><p:a xmlns:p="urn:1"><p:b xmlns:p="urn:2"/></p:a></p:r>',
    # empty elements, attributes on the root that look like Id
    b'<r Id="x"><a/><b></b><c> </c></r>',
    # a long plain run interrupted by markup-significant bytes, in text and in a comment
    b"<r>"
    + b"A" * 3000
    + b"&amp;"
    + b"B" * 3000
    + b"\r\n"
    + b"C" * 2000
    + b"]"
    + b"D" * 600
    + b"</r>",
    b"<r><!--" + b"A" * 3000 + b"--><![CDATA[" + b"B" * 3000 + b"]]>" + b"C" * 700 + b"</r>",
    b'<r a="' + b"A" * 3000 + b'">' + b"E" * 513 + b"\r" + b"F" * 513 + b"\r</r>",
]


@pytest.mark.parametrize("data", TRICKY, ids=range(len(TRICKY)))
@pytest.mark.parametrize("chunk_size", CHUNKS)
def test_tricky_documents_agree_with_lxml(data: bytes, chunk_size: int) -> None:
    """Namespaces, escapes, line ends, CDATA, PIs, comments: the same bytes as libxml2."""
    assert stream_c14n(data, chunk_size) == lxml_c14n(data)


@pytest.mark.parametrize(
    ("size", "line_ending"),
    [(0, b"\n"), (1, b"\n"), (700, None), (100_000, b"\n"), (300_001, b"\r\n"), (2_000_000, None)],
)
@pytest.mark.parametrize("chunk_size", [1000, 1 << 16, 1 << 20])
def test_generated_attachments_agree(
    tmp_path: Path, size: int, line_ending: bytes | None, chunk_size: int
) -> None:
    """Packages with attachments of many sizes and line ends canonicalise as libxml2 does."""
    path = tmp_path / "p.xml"
    write_large_package(
        (DATA / "trust" / "edoc.xml").read_bytes(), path, size, line_ending=line_ending
    )
    data = path.read_bytes()
    assert stream_c14n(data, chunk_size) == lxml_c14n(data)


def test_signxml_digest_value_is_the_streamed_digest(tmp_path: Path) -> None:
    """The DigestValue signxml writes equals the streamed digest of the signed package."""
    ca = pki.make_ca("C14N CA")
    agency = pki.issue_agency(ca, "000.00.12.H49")
    path = tmp_path / "big.xml"
    write_large_package((DATA / "trust" / "edoc.xml").read_bytes(), path, 50_000)
    signed = sign_package(path.read_bytes(), SigningIdentity(agency.key, agency.certificate))
    (tmp_path / "signed.xml").write_bytes(signed)
    root = etree.fromstring(signed)
    value = root.findtext(f".//{{{_tree.DSIG_NS}}}DigestValue")
    assert value is not None
    assert digest_file(tmp_path / "signed.xml") == base64.b64decode(value)


# Random documents: names, prefixes and namespaces (two prefixes for one URI, default
# namespace undeclared), attribute values and text with every character that needs care,
# written with raw or referenced forms.

_URIS = ["urn:a", "urn:b", "http://www.mic.gov.vn/TBT/QCVN_102_2016"]
_TEXT = st.text(alphabet=st.sampled_from([*list("ab &<>\"'\t\n\r]ệĐ"), "\xa0", "x"]), max_size=12)


def _escape_text(text: str, draw: st.DrawFn) -> str:
    out = []
    for i, ch in enumerate(text):
        if ch == "&":
            out.append(draw(st.sampled_from(["&amp;", "&#38;", "&#x26;"])))
        elif ch == "<":
            out.append(draw(st.sampled_from(["&lt;", "&#60;"])))
        elif ch == ">" and ((i >= 1 and text[i - 1] == "]") or draw(st.booleans())):
            out.append("&gt;")
        elif ch == "\r":
            out.append(draw(st.sampled_from(["\r", "&#13;", "&#xD;"])))
        else:
            out.append(ch)
    return "".join(out)


def _escape_attribute(value: str, draw: st.DrawFn) -> str:
    out = []
    for ch in value:
        if ch in '&<"':
            out.append({"&": "&amp;", "<": "&lt;", '"': "&quot;"}[ch])
        elif ch in "\t\n\r":
            out.append(draw(st.sampled_from([ch, f"&#{ord(ch)};"])))
        else:
            out.append(ch)
    return "".join(out)


@st.composite
def _element(draw: st.DrawFn, scope: dict[str, str], depth: int) -> str:
    scope = dict(scope)
    declarations: list[str] = []
    for _ in range(draw(st.integers(0, 2))):
        prefix = draw(st.sampled_from(["", "p", "q", "edXML"]))
        uri = draw(st.sampled_from([*_URIS, ""] if prefix == "" else _URIS))
        if any(d.startswith(f"xmlns{':' + prefix if prefix else ''}=") for d in declarations):
            continue
        declarations.append(f'xmlns{":" + prefix if prefix else ""}="{uri}"')
        scope[prefix] = uri
    prefix = draw(st.sampled_from(sorted(p for p in scope if p == "" or scope[p])))
    tag = (f"{prefix}:" if prefix else "") + draw(st.sampled_from(["a", "b", "Đơn"]))
    attributes: list[str] = []
    used: set[tuple[str, str]] = set()
    for _ in range(draw(st.integers(0, 3))):
        aprefix = draw(st.sampled_from(["", "xml", *sorted(p for p in scope if p and scope[p])]))
        local = draw(st.sampled_from(["k", "Id", "z", "lang"]))
        key = ("urn:xml" if aprefix == "xml" else scope.get(aprefix, "") if aprefix else "", local)
        if key in used:
            continue
        used.add(key)
        name = f"{aprefix}:{local}" if aprefix else local
        attributes.append(f'{name}="{_escape_attribute(draw(_TEXT), draw)}"')
    parts = [f"<{' '.join([tag, *declarations, *attributes])}>"]
    for _ in range(draw(st.integers(0, 3 if depth < 4 else 0))):
        kind = draw(st.sampled_from(["text", "element", "comment", "pi", "cdata"]))
        if kind == "text":
            parts.append(_escape_text(draw(_TEXT), draw))
        elif kind == "element":
            parts.append(draw(_element(scope, depth + 1)))
        elif kind == "comment":
            parts.append("<!-- c -->")
        elif kind == "pi":
            parts.append(draw(st.sampled_from(["<?t d?>", "<?t?>", "<?t  a b ?>"])))
        else:
            parts.append("<![CDATA[" + draw(_TEXT).replace("]]>", "") + "]]>")
    parts.append(f"</{tag}>")
    return "".join(parts)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(document=_element({"": ""}, 0), chunk_size=st.sampled_from([1, 3, 64, 4096]))
def test_random_documents_agree_with_lxml(document: str, chunk_size: int) -> None:
    """Any document libxml2 reads canonicalises to the same bytes streamed, or both refuse."""
    data = document.encode()
    try:
        expected = lxml_c14n(data)
    except etree.XMLSyntaxError:
        with pytest.raises(XmlRefused):
            stream_c14n(data, chunk_size)
        return
    assert stream_c14n(data, chunk_size) == expected
