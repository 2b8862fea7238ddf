"""build() writes the canonical form, and parse(build(m)) == m for every model."""

from __future__ import annotations

import dataclasses
import datetime as dt
from typing import TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from lienthong.edxml import EdocPackage, StatusPackage, build, new_edoc, parse, validate
from lienthong.edxml.build import manifest_for
from lienthong.edxml.codes import CodeError
from lienthong.edxml.model import (
    Attachment,
    Business,
    BusinessDocType,
    BusinessDocumentInfo,
    Code,
    DocumentType,
    Organization,
    OtherInfo,
    PromulgationInfo,
    Receiver,
    ReplacementInfo,
    ResponseFor,
    SignerInfo,
    StaffInfo,
    TraceHeader,
)

T = TypeVar("T")
NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
VIETNAMESE = (
    "aăâbcdđeêghiklmnoôơpqrstuưvxyáàảãạắằẳẵặấầẩẫậéèẻẽẹếềểễệíìỉĩịóòỏõọốồổỗộớờởỡợúùủũụứừửữựýỳỷỹỵĐƯƠ"
)

_chars = st.one_of(
    st.sampled_from(VIETNAMESE),
    st.characters(blacklist_categories=("Cs", "Cc", "Cn", "Co")),
)
text = st.text(_chars, max_size=30).map(str.strip)
opt_text = st.none() | text
small_int = st.integers(-(2**31), 2**31 - 1)
opt_int = st.none() | small_int
dates = st.dates(dt.date(1900, 1, 1), dt.date(2099, 12, 31))
timestamps = st.datetimes(dt.datetime(1900, 1, 1), dt.datetime(2099, 12, 31)).map(
    lambda t: t.replace(microsecond=0)
)
codes = st.builds(
    "{:03d}.{:02d}.{:02d}.{}{:02d}".format,
    st.integers(0, 999),
    st.integers(0, 99),
    st.integers(0, 99),
    st.sampled_from("ABCDEFGHIJK"),
    st.integers(1, 99),
)
ids = st.text("abcdefXYZ0123456789-_.", min_size=1, max_size=12)


def tuples(strategy: st.SearchStrategy[T], min_size: int = 0) -> st.SearchStrategy[tuple[T, ...]]:
    """Tuples of 0 (or ``min_size``) to 3 values."""
    return st.lists(strategy, min_size=min_size, max_size=3).map(tuple)


organizations = st.builds(
    Organization, codes, text, opt_text, opt_text, opt_text, opt_text, opt_text, opt_text
)
staff = st.builds(StaffInfo, opt_text, opt_text, opt_text, opt_text)
# A DocumentId is never empty in a model: parse derives one where the package gives none.
document_ids = text.filter(bool)
response_for = st.builds(ResponseFor, codes, text, st.none() | dates, document_ids)
traces = tuples(st.builds(TraceHeader, st.none() | codes, st.none() | timestamps))
business = st.builds(
    Business,
    document_ids,
    st.sampled_from(BusinessDocType),
    opt_text,
    st.none() | st.integers(0, 1),
    tuples(staff),
    tuples(
        st.builds(
            BusinessDocumentInfo,
            opt_int,
            opt_int,
            tuples(st.builds(Receiver, codes, st.integers(0, 1))),
        )
    ),
    tuples(st.builds(ReplacementInfo, text, tuples(codes))),
)
attachments = st.builds(
    Attachment,
    ids,
    text.filter(bool),  # an attachment without a name is read under its ContentId
    st.sampled_from(["application/pdf", "text/plain", "application/zip", "image/png"]),
    st.binary(max_size=200),
    opt_text,
)


@st.composite
def edocs(draw: st.DrawFn) -> EdocPackage:
    files = tuple(draw(st.lists(attachments, max_size=3, unique_by=lambda a: a.content_id)))
    return EdocPackage(
        from_=draw(organizations),
        to=draw(tuples(organizations, min_size=1)),
        code=draw(st.builds(Code, text, text)),
        promulgation=draw(st.builds(PromulgationInfo, text, st.none() | dates)),
        document_type=draw(st.builds(DocumentType, opt_int, opt_int, opt_text)),
        subject=draw(text),
        signer=draw(st.none() | st.builds(SignerInfo, opt_text, opt_text, opt_text)),
        document_id=draw(document_ids),
        content=draw(opt_text),
        due_date=draw(st.none() | dates),
        to_places=draw(tuples(text)),
        other_info=draw(
            st.none()
            | st.builds(
                OtherInfo,
                st.none() | st.integers(0, 4),
                opt_text,
                opt_text,
                st.none() | st.integers(0, 65535),
                st.none() | st.integers(0, 65535),
                opt_text,
                tuples(text),
            )
        ),
        response_for=draw(tuples(response_for)),
        steering_type=draw(opt_int),
        traces=draw(traces),
        business=draw(st.none() | business),
        manifest=manifest_for(files),
        attachments=files,
    )


statuses = st.builds(
    StatusPackage,
    organizations,
    response_for,
    st.sampled_from(["01", "02", "03", "04", "05", "06", "13", "15", "16"]),
    timestamps,
    st.none() | staff,
    opt_text,
    traces,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edocs())
def test_edoc_round_trip(pkg: EdocPackage) -> None:
    """Any document package survives build then parse unchanged."""
    assert parse(build(pkg)) == pkg


@settings(max_examples=100, deadline=None)
@given(statuses)
def test_status_round_trip(pkg: StatusPackage) -> None:
    """Any status package survives build then parse unchanged."""
    assert parse(build(pkg)) == pkg


@settings(max_examples=50, deadline=None)
@given(edocs())
def test_built_packages_pass_the_schema(pkg: EdocPackage) -> None:
    """Whatever the values, build() gives a structure the XSD accepts (no structural problem)."""
    problems = validate(build(pkg)).problems
    assert not [p for p in problems if "Element '" in p.message]


def _sample() -> EdocPackage:
    return new_edoc(
        from_code="000.00.00.G22",
        to_codes=["000.00.00.H49", "000.00.12.H49"],
        subject="Về việc thử nghiệm",
        attachments=[("a.pdf", b"%PDF-1.4", "application/pdf")],
        today=dt.date(2025, 9, 30),
        number="7816",
        notation="VPCP-TTĐT",
    )


def test_canonical_form() -> None:
    """UTF-8 with a declaration, default namespace on the root, ``edXML:`` on children."""
    data = build(_sample())
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<edXML xmlns="')
    assert b"<edXML:edXMLEnvelope>" in data
    assert b"<edXML:ContentId>cid:1</edXML:ContentId>" in data
    assert b"<edXML:ContentId>1</edXML:ContentId>" in data
    assert b"<edXML:PromulgationDate>2025/09/30</edXML:PromulgationDate>" in data
    assert b"Signature" not in data
    root = etree.fromstring(data)
    assert root.tag == f"{{{NS}}}edXML"
    assert root.prefix is None
    assert root[0].prefix == "edXML"
    header = root.find(f"{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLHeader")
    assert header is not None
    assert [etree.QName(c).localname for c in header] == ["MessageHeader", "TraceHeaderList"]


def test_business_is_written_bussiness() -> None:
    """The business block is emitted with the producers' spelling, inside TraceHeaderList."""
    pkg = dataclasses.replace(_sample(), business=Business("x", BusinessDocType.REVOKE))
    data = build(pkg)
    assert b"<edXML:Bussiness>" in data
    assert b"<edXML:BussinessDocType>1</edXML:BussinessDocType>" in data
    assert data.index(b"<edXML:TraceHeaderList>") < data.index(b"<edXML:Bussiness>")


def test_header_order_is_the_producers() -> None:
    """MessageHeader children come out in the producers' order."""
    root = etree.fromstring(build(_sample()))
    header = root.find(f"{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLHeader/{{{NS}}}MessageHeader")
    assert header is not None
    names = [etree.QName(c).localname for c in header]
    assert names == [
        "From", "To", "To", "Code", "PromulgationInfo", "DocumentType", "Subject",
        "SignerInfo", "OtherInfo", "DocumentId",
    ]  # fmt: skip


def test_text_xml_cannot_carry_is_refused() -> None:
    """A control character in a value is a ValueError at build time, not broken XML."""
    with pytest.raises(ValueError, match="cannot carry"):
        build(dataclasses.replace(_sample(), subject="a\x01b"))


def test_new_edoc_is_valid_and_keyed() -> None:
    """new_edoc() makes a package that validates, with the DocumentId built from its facts."""
    pkg = _sample()
    assert pkg.document_id == "000.00.00.G22,2025/09/30,7816/VPCP-TTĐT"
    assert pkg.manifest[0].content_id == pkg.attachments[0].content_id
    result = validate(build(pkg), today=dt.date(2025, 10, 1))
    assert result.ok, result.problems
    assert result.package == pkg


def test_new_edoc_refuses_bad_codes() -> None:
    """A malformed agency code given to new_edoc() is a CodeError naming it."""
    with pytest.raises(CodeError, match="h49"):
        new_edoc(
            from_code="000.00.00.G22",
            to_codes=["000.00.00.h49"],
            subject="x",
            attachments=[],
            today=dt.date(2025, 1, 1),
        )


def test_signature_slot_after_trace_list() -> None:
    """A ds:Signature put after TraceHeaderList (as the signer does) keeps the package valid."""
    pkg = _sample()
    root = etree.fromstring(build(pkg))
    trace_list = root.find(f"{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLHeader/{{{NS}}}TraceHeaderList")
    assert trace_list is not None
    trace_list.addnext(etree.Element("{http://www.w3.org/2000/09/xmldsig#}Signature"))
    result = validate(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
    assert result.ok, result.problems
    assert result.package == dataclasses.replace(pkg, signed=True)
