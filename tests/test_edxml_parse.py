"""Parsing reads every producer variant into the same model and refuses what cannot be one."""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import re
import zipfile
from pathlib import Path

import pytest

from lienthong.edxml import (
    BusinessDocType,
    EdocPackage,
    PackageError,
    StatusPackage,
    build,
    parse,
)
from lienthong.edxml.model import Attachment
from lienthong.errors import PeerInputError, XmlRefused


def _edoc(data_dir: Path, name: str) -> EdocPackage:
    package = parse((data_dir / name).read_bytes())
    assert isinstance(package, EdocPackage)
    return package


def test_plain_package_fields(data_dir: Path) -> None:
    """The plain package gives its header fields, recipients, trace and attachment."""
    pkg = _edoc(data_dir, "edoc_valid.xml")
    assert pkg.kind == "edoc"
    assert pkg.sender == "000.00.00.G22"
    assert pkg.from_.organ_name == "Văn phòng Chính phủ"
    assert pkg.recipients == ("000.00.00.H49", "000.00.12.H49")
    assert pkg.document_id == "000.00.00.G22,2025/09/30,7816/VPCP-TTĐT"
    assert pkg.code.notation == "VPCP-TTĐT"
    assert pkg.promulgation.date == dt.date(2025, 9, 30)
    assert pkg.other_info is not None
    assert pkg.other_info.priority == 1
    assert pkg.traces[0].timestamp == dt.datetime(2025, 9, 30, 14, 5, 10)
    assert pkg.attachments[0].content == "Kính gửi: UBND tỉnh Quảng Nam.\n".encode()
    assert pkg.manifest[0].content_id == pkg.attachments[0].content_id == "1"
    assert pkg.business is None
    assert not pkg.signed


@pytest.mark.parametrize(
    "name",
    [
        "variant_no_prefix.xml",
        "variant_reordered.xml",
        "variant_cid_both_bare.xml",
        "variant_old_timestamp.xml",
    ],
)
def test_variants_read_as_the_plain_package(data_dir: Path, name: str) -> None:
    """Prefix, order, ContentId and timestamp variants give exactly the plain package's model."""
    assert _edoc(data_dir, name) == _edoc(data_dir, "edoc_valid.xml")


@pytest.mark.parametrize("name", ["variant_signature_edxml_ns.xml", "signature_dsig_ns.xml"])
def test_signature_in_either_namespace_is_reported(data_dir: Path, name: str) -> None:
    """A Signature in the DSig or the edXML namespace sets ``signed`` and changes nothing else."""
    pkg = _edoc(data_dir, name)
    assert pkg.signed
    assert dataclasses.replace(pkg, signed=False) == _edoc(data_dir, "edoc_valid.xml")


def test_business_spelling_variant(data_dir: Path) -> None:
    """``Business`` (one s) is read as ``Bussiness``: both revoke files give the same model."""
    pkg = _edoc(data_dir, "revoke_business_spelling.xml")
    assert pkg == _edoc(data_dir, "revoke.xml")
    assert pkg.business is not None
    assert pkg.business.doc_type is BusinessDocType.REVOKE
    assert pkg.business.reason == "Thu hồi do ban hành nhầm"


def test_update_receivers(data_dir: Path) -> None:
    """An update carries its document infos with the receivers added or removed."""
    business = _edoc(data_dir, "update.xml").business
    assert business is not None
    assert business.doc_type is BusinessDocType.UPDATE
    receiver = business.document_infos[0].receivers[0]
    assert (receiver.organ_id, receiver.receiver_type) == ("000.00.12.H49", 1)
    assert business.staff[0].staff == "Trần Thị B"


def test_replace_targets(data_dir: Path) -> None:
    """A replacement names the replaced document and the agencies concerned."""
    business = _edoc(data_dir, "replace.xml").business
    assert business is not None
    assert business.doc_type is BusinessDocType.REPLACE
    assert business.replacements[0].document_id.endswith("7815/VPCP-TTĐT")
    assert business.replacements[0].organ_ids == ("000.00.00.H49", "000.00.12.H49")


def test_status_and_its_wrapper_variant(data_dir: Path) -> None:
    """A status package reads the same under ``MessageHeader`` or ``Status``, any time format."""
    status = parse((data_dir / "status.xml").read_bytes())
    assert isinstance(status, StatusPackage)
    assert status.kind == "status"
    assert status.status_code == "03"
    assert status.document_id == "000.00.00.G22,2025/09/30,7816/VPCP-TTĐT"
    assert status.recipients == ()
    assert status.timestamp == dt.datetime(2025, 10, 1, 8, 30)
    assert parse((data_dir / "variant_status_wrapper.xml").read_bytes()) == status


def test_zipped_attachment_is_unzipped(data_dir: Path) -> None:
    """A single-entry zip with a non-zip AttachmentName comes out as the file inside."""
    attachment = _edoc(data_dir, "attachment_zipped.xml").attachments[0]
    assert attachment.name == "congvan.pdf"
    assert attachment.content == b"%PDF-1.4\n% cong van mau\n" * 20
    assert attachment.content_type == "application/pdf"


def test_raw_attachment_kept(data_dir: Path) -> None:
    """A raw file keeps its bytes and MIME type."""
    attachment = _edoc(data_dir, "attachment_raw_pdf.xml").attachments[0]
    assert attachment.content == b"%PDF-1.4\n% raw\n"
    assert attachment.content_type == "application/pdf"


def _with_attachment(data_dir: Path, attachment: Attachment) -> bytes:
    pkg = _edoc(data_dir, "edoc_valid.xml")
    return build(dataclasses.replace(pkg, attachments=(attachment,), manifest=()))


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_zip_bomb_stops_at_the_cap(data_dir: Path) -> None:
    """A zipped attachment expanding past ``max_unzipped`` is refused with the limit named."""
    bomb = _zip({"x.pdf": b"\0" * 200_000})
    data = _with_attachment(data_dir, Attachment("1", "x.pdf", "application/zip", bomb))
    with pytest.raises(PackageError, match="over the limit of 100000") as info:
        parse(data, max_unzipped=100_000)
    assert info.value.path == "AttachmentEncoded/Attachment/ContentTransferEncoded"
    assert isinstance(info.value, PeerInputError)


@pytest.mark.parametrize(
    ("name", "entries"),
    [("a.zip", {"a.pdf": b"x"}), ("a.pdf", {"a.pdf": b"x", "b.pdf": b"y"})],
)
def test_zip_left_alone(data_dir: Path, name: str, entries: dict[str, bytes]) -> None:
    """A zip named *.zip, or holding several files, is delivered as the zip itself."""
    archive = _zip(entries)
    data = _with_attachment(data_dir, Attachment("1", name, "application/zip", archive))
    pkg = parse(data)
    assert isinstance(pkg, EdocPackage)
    assert pkg.attachments[0].content == archive


def test_two_message_headers_refused(data_dir: Path) -> None:
    """Two MessageHeaders (the start of signature wrapping) make no model: PackageError."""
    with pytest.raises(PackageError, match="MessageHeader") as info:
        parse((data_dir / "invalid_two_headers.xml").read_bytes())
    assert "MessageHeader[2]" in info.value.path


def test_missing_subject_still_makes_a_model(data_dir: Path) -> None:
    """A field real traffic may lack (here Subject) is read as empty, not refused."""
    pkg = parse((data_dir / "deviation_missing_subject.xml").read_bytes())
    assert isinstance(pkg, EdocPackage)
    assert pkg.subject == ""


@pytest.mark.parametrize(
    ("element", "path"),
    [
        (b"From", "edXMLEnvelope/edXMLHeader/MessageHeader/From"),
        (b"To", "edXMLEnvelope/edXMLHeader/MessageHeader/To"),
    ],
)
def test_missing_sender_or_recipients_names_its_path(
    data_dir: Path, element: bytes, path: str
) -> None:
    """Without a sender or any recipient no package can be processed: refused with the path."""
    data = (data_dir / "edoc_valid.xml").read_bytes()
    data = re.sub(rb"<edXML:%s>.*?</edXML:%s>" % (element, element), b"", data, flags=re.S)
    with pytest.raises(PackageError) as info:
        parse(data)
    assert info.value.path.startswith(path)


def test_not_edxml_root_refused(data_dir: Path) -> None:
    """A root other than edXML is a PackageError at path ``/``."""
    with pytest.raises(PackageError) as info:
        parse((data_dir / "invalid_not_edxml.xml").read_bytes())
    assert info.value.path == "/"


def test_hostile_xml_refused(data_dir: Path) -> None:
    """Entity bombs go through xmlsafe and are refused as XmlRefused."""
    with pytest.raises(XmlRefused):
        parse((data_dir / "hostile_billion_laughs.xml").read_bytes())


def test_parse_limits_are_passed_on(data_dir: Path) -> None:
    """``max_bytes`` and ``max_depth`` reach the safe parser."""
    data = (data_dir / "edoc_valid.xml").read_bytes()
    with pytest.raises(XmlRefused, match="over the limit"):
        parse(data, max_bytes=100)
    with pytest.raises(XmlRefused) as info:
        parse(data, max_depth=3)
    assert info.value.reason == "too-deep"
