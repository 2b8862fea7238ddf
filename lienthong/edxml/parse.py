"""Read an edXML package from bytes, tolerant of every producer variant the spec lists.

The bytes go through :func:`lienthong.xmlsafe.parse_xml` (the only XML parser for untrusted
input), the tree is normalised (:mod:`lienthong.edxml._tree`), and the model is read from the
normalised tree. Anything that makes a model impossible raises :class:`PackageError` (a
``PeerInputError``) naming the field path; malformed or hostile XML raises ``XmlRefused``.
Checks that leave a model possible (lengths, codes, dates in the future...) are
:func:`lienthong.edxml.validate.validate`'s business, not this module's.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import datetime as dt
import io
import zipfile
import zlib
from collections.abc import Callable
from typing import TypeVar

from lxml import etree

from lienthong.edxml._layout import (
    NS,
    ORDER,
    document_id_for,
    field_name,
    parse_date,
    parse_timestamp,
)
from lienthong.edxml._tree import PackageError, normalise, path_of
from lienthong.edxml.model import (
    Attachment,
    Business,
    BusinessDocType,
    BusinessDocumentInfo,
    Code,
    DocumentType,
    EdocPackage,
    ManifestReference,
    Organization,
    OtherInfo,
    Package,
    PromulgationInfo,
    Receiver,
    ReplacementInfo,
    ResponseFor,
    SignerInfo,
    StaffInfo,
    StatusPackage,
    TraceHeader,
)
from lienthong.xmlsafe import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, parse_xml

__all__ = ["DEFAULT_MAX_UNZIPPED", "PackageError", "package_from_tree", "parse"]

DEFAULT_MAX_UNZIPPED = 256 * 1024 * 1024
"""Largest file accepted out of a zipped attachment (a zip bomb stops here)."""

T = TypeVar("T")
_Element = etree._Element

# A small fixed table: the stdlib mimetypes module reads system files on first use, and the
# producers zip only office documents and scans.
_MIME_BY_EXTENSION = {
    "pdf": "application/pdf",
    "doc": "application/msword",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "xls": "application/vnd.ms-excel",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "odt": "application/vnd.oasis.opendocument.text",
    "ods": "application/vnd.oasis.opendocument.spreadsheet",
    "txt": "text/plain",
    "xml": "application/xml",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "png": "image/png",
    "tif": "image/tiff",
    "tiff": "image/tiff",
}
OCTET_STREAM = "application/octet-stream"


def mime_type_for(name: str) -> str:
    """The MIME type of a file name by its extension, ``application/octet-stream`` if unknown."""
    _, dot, ext = name.rpartition(".")
    return _MIME_BY_EXTENSION.get(ext.lower(), OCTET_STREAM) if dot else OCTET_STREAM


def parse(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_unzipped: int = DEFAULT_MAX_UNZIPPED,
) -> Package:
    """Read a package from ``data``; raise ``XmlRefused`` or :class:`PackageError` if impossible."""
    root = parse_xml(data, max_bytes=max_bytes, max_depth=max_depth)
    normalised = normalise(root)
    return package_from_tree(normalised.root, signed=normalised.signed, max_unzipped=max_unzipped)


def package_from_tree(
    root: _Element, *, signed: bool, max_unzipped: int = DEFAULT_MAX_UNZIPPED
) -> Package:
    """Read the model from a normalised tree (see :func:`lienthong.edxml._tree.normalise`).

    Tolerant as the axis is (spec section 8): only what makes processing impossible raises
    :class:`PackageError`: no envelope or header, no sender, an edoc without a recipient, a
    status without the document it answers, an attachment that cannot be read, a date that
    does not exist, a repeated element that must be single. Everything else that is missing,
    empty or malformed is read as absent; :func:`~lienthong.edxml.validate.validate` reports it.
    """
    envelope = _need(root, "edXMLEnvelope")
    header = _need(_need(envelope, "edXMLHeader"), "MessageHeader")
    trace_list = _one(_need(envelope, "edXMLHeader"), "TraceHeaderList")
    traces = () if trace_list is None else _all(trace_list, "TraceHeader", _trace)
    from_ = _sender(header)
    if _one(header, "StatusCode") is not None:
        return StatusPackage(
            from_=from_,
            response_for=_answered(header),
            status_code=_need_text(header, "StatusCode"),
            timestamp=_convert(_need(header, "Timestamp"), parse_timestamp),
            staff=_maybe(header, "StaffInfo", _staff),
            description=_text(header, "Description"),
            traces=traces,
            signed=signed,
        )
    body = _one(envelope, "edXMLBody")
    manifest = None if body is None else _one(body, "edXMLManifest")
    encoded = _one(root, "AttachmentEncoded")
    code = _maybe(header, "Code", _code) or Code(number="", notation="")
    promulgation = _maybe(header, "PromulgationInfo", _promulgation) or PromulgationInfo("", None)
    document_id = _text(header, "DocumentId") or document_id_for(
        from_.organ_id, promulgation.date, code.number, code.notation
    )
    return EdocPackage(
        from_=from_,
        to=_recipients(header),
        code=code,
        promulgation=promulgation,
        document_type=_maybe(header, "DocumentType", _document_type) or DocumentType(None),
        subject=_text(header, "Subject") or "",
        signer=_maybe(header, "SignerInfo", _signer),
        document_id=document_id,
        content=_text(header, "Content"),
        due_date=_date(header, "DueDate"),
        to_places=_maybe(header, "ToPlaces", lambda e: _all(e, "Place", _element_text)) or (),
        other_info=_maybe(header, "OtherInfo", _other_info),
        response_for=tuple(r for r in _all(header, "ResponseFor", _response_for) if r),
        steering_type=_int(header, "SteeringType"),
        traces=traces,
        business=None
        if trace_list is None
        else _maybe(trace_list, "Bussiness", lambda e: _business(e, document_id)),
        manifest=() if manifest is None else _all(manifest, "Reference", _reference),
        attachments=()
        if encoded is None
        else _all(encoded, "Attachment", lambda e: _attachment(e, max_unzipped)),
        signed=signed,
    )


def _sender(header: _Element) -> Organization:
    from_ = _need(header, "From")
    organization = _organization(from_)
    if not organization.organ_id:
        raise PackageError(f"{path_of(from_)}/OrganId", "the sending agency's code is missing")
    return organization


def _recipients(header: _Element) -> tuple[Organization, ...]:
    elements = header.findall(f"{{{NS}}}To")
    if not elements:
        raise PackageError(f"{path_of(header)}/To", "the package names no recipient")
    for element in elements:
        if not _text(element, "OrganId"):
            raise PackageError(f"{path_of(element)}/OrganId", "the recipient's code is missing")
    return tuple(_organization(e) for e in elements)


def _answered(header: _Element) -> ResponseFor:
    """The document a status answers: its sender and DocumentId are needed to route it."""
    element = _need(header, "ResponseFor")
    answered = _response_for(element)
    for name in ("OrganId", "DocumentId"):
        if answered is None or not getattr(answered, field_name(name)):
            raise PackageError(f"{path_of(element)}/{name}", "is missing: no document to answer")
    assert answered is not None
    return answered


# --- element access -----------------------------------------------------------------------


def _one(parent: _Element, name: str) -> _Element | None:
    found = parent.findall(f"{{{NS}}}{name}")
    if len(found) > 1:
        raise PackageError(path_of(found[1]), f"<{name}> appears {len(found)} times, once allowed")
    return found[0] if found else None


def _need(parent: _Element, name: str) -> _Element:
    element = _one(parent, name)
    if element is None:
        raise PackageError(f"{path_of(parent)}/{name}", "is missing")
    return element


def _all(parent: _Element, name: str, read: Callable[[_Element], T]) -> tuple[T, ...]:
    return tuple(read(e) for e in parent.findall(f"{{{NS}}}{name}"))


def _maybe(parent: _Element, name: str, read: Callable[[_Element], T]) -> T | None:
    element = _one(parent, name)
    return None if element is None else read(element)


def _element_text(element: _Element) -> str:
    return (element.text or "").strip()


def _text(parent: _Element, name: str) -> str | None:
    return _maybe(parent, name, _element_text)


def _need_text(parent: _Element, name: str) -> str:
    return _element_text(_need(parent, name))


def _convert(element: _Element, convert: Callable[[str], T]) -> T:
    try:
        return convert(_element_text(element))
    except ValueError as exc:
        raise PackageError(path_of(element), str(exc)) from None


def _to_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{text!r} is not an integer") from None


def _int(parent: _Element, name: str) -> int | None:
    """An integer field, ``None`` when absent, empty or not an integer (validate says which)."""
    text = _text(parent, name)
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _need_int(parent: _Element, name: str) -> int:
    return _convert(_need(parent, name), _to_int)


def _date(parent: _Element, name: str) -> dt.date | None:
    """A date field, ``None`` when absent or empty; a date that does not exist raises."""
    element = _one(parent, name)
    if element is None or not _element_text(element):
        return None
    return _convert(element, parse_date)


def _timestamp(parent: _Element, name: str) -> dt.datetime | None:
    element = _one(parent, name)
    if element is None or not _element_text(element):
        return None
    return _convert(element, parse_timestamp)


# --- the parts ------------------------------------------------------------------------------


def _flat(cls: type[T], group: str, e: _Element) -> T:
    """A model of text fields only (Organization, SignerInfo, StaffInfo) from its element;
    a missing required text is ``""`` (validate reports it)."""
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    required = {f.name for f in fields if f.default is dataclasses.MISSING}
    values = {
        field_name(n): _text(e, n) or "" if field_name(n) in required else _text(e, n)
        for n in ORDER[group]
    }
    return cls(**values)


def _organization(e: _Element) -> Organization:
    return _flat(Organization, "From", e)


def _code(e: _Element) -> Code:
    return Code(number=_text(e, "CodeNumber") or "", notation=_text(e, "CodeNotation") or "")


def _promulgation(e: _Element) -> PromulgationInfo:
    return PromulgationInfo(place=_text(e, "Place") or "", date=_date(e, "PromulgationDate"))


def _document_type(e: _Element) -> DocumentType:
    return DocumentType(
        type=_int(e, "Type"),
        type_detail=_int(e, "TypeDetail"),
        type_name=_text(e, "TypeName"),
    )


def _signer(e: _Element) -> SignerInfo:
    return _flat(SignerInfo, "SignerInfo", e)


def _other_info(e: _Element) -> OtherInfo:
    appendixes = _maybe(e, "Appendixes", lambda a: _all(a, "Appendix", _element_text))
    return OtherInfo(
        priority=_int(e, "Priority"),
        sphere_of_promulgation=_text(e, "SphereOfPromulgation"),
        typer_notation=_text(e, "TyperNotation"),
        promulgation_amount=_int(e, "PromulgationAmount"),
        page_amount=_int(e, "PageAmount"),
        direction=_text(e, "Direction"),
        appendixes=appendixes or (),
    )


def _response_for(e: _Element) -> ResponseFor | None:
    """The link, or ``None`` for an empty ``<ResponseFor/>`` (meaning: answers nothing)."""
    link = ResponseFor(
        organ_id=_text(e, "OrganId") or "",
        code=_text(e, "Code") or "",
        promulgation_date=_date(e, "PromulgationDate"),
        document_id=_text(e, "DocumentId") or "",
    )
    return link if link != _NO_LINK else None


_NO_LINK = ResponseFor(organ_id="", code="", promulgation_date=None, document_id="")


def _staff(e: _Element) -> StaffInfo:
    return _flat(StaffInfo, "StaffInfo", e)


def _trace(e: _Element) -> TraceHeader:
    organ_id = _text(e, "OrganId")
    return TraceHeader(
        # The axis writes hops of its own with no agency, as an empty element or as "null".
        organ_id=None if organ_id in (None, "", "null") else organ_id,
        timestamp=_timestamp(e, "Timestamp"),
    )


def _business(e: _Element, own_document_id: str) -> Business:
    """The business block; without its ``DocumentId`` it concerns the package's own document
    (the official SDK leaves it out for revoke and replace packages, which reuse the header of
    the document they act on)."""
    doc_type_element = _one(e, "BussinessDocType")
    doc_type = BusinessDocType.NEW
    if doc_type_element is not None:
        doc_type = _convert(doc_type_element, lambda t: BusinessDocType(_to_int(t)))
    replacements = _maybe(
        e, "ReplacementInfoList", lambda r: _all(r, "ReplacementInfo", _replacement)
    )
    return Business(
        document_id=_text(e, "DocumentId") or own_document_id,
        doc_type=doc_type,
        reason=_text(e, "BussinessDocReason"),
        paper=_int(e, "Paper"),
        staff=_all(e, "StaffInfo", _staff),
        document_infos=_all(e, "BussinessDocumentInfo", _document_info),
        replacements=replacements or (),
    )


def _document_info(e: _Element) -> BusinessDocumentInfo:
    receivers = _maybe(e, "ReceiverList", lambda r: _all(r, "Receiver", _receiver))
    return BusinessDocumentInfo(
        document_info=_int(e, "DocumentInfo"),
        document_receiver=_int(e, "DocumentReceiver"),
        receivers=receivers or (),
    )


def _receiver(e: _Element) -> Receiver:
    return Receiver(organ_id=_need_text(e, "OrganId"), receiver_type=_need_int(e, "ReceiverType"))


def _replacement(e: _Element) -> ReplacementInfo:
    organ_ids = _maybe(e, "OrganIdList", lambda r: _all(r, "OrganId", _element_text))
    return ReplacementInfo(document_id=_need_text(e, "DocumentId"), organ_ids=organ_ids or ())


def bare_content_id(text: str) -> str:
    """A ContentId without the ``cid:`` prefix and angle brackets some producers add."""
    text = text.strip().strip("<>")
    if text[:4].lower() == "cid:":
        text = text[4:]
    return text


def _reference(e: _Element) -> ManifestReference:
    return ManifestReference(
        content_id=bare_content_id(_need_text(e, "ContentId")),
        content_type=_text(e, "ContentType"),
        description=_text(e, "Description"),
        attachment_name=_text(e, "AttachmentName"),
    )


def _attachment(e: _Element, max_unzipped: int) -> Attachment:
    content_id = bare_content_id(_need_text(e, "ContentId"))
    name = _text(e, "AttachmentName") or content_id
    content_type = _text(e, "ContentType") or OCTET_STREAM
    encoded = _need(e, "ContentTransferEncoded")
    content = _convert(encoded, _decode_base64)
    if content_type.lower() == "application/zip" and not name.lower().endswith(".zip"):
        unzipped = _single_zip_entry(content, max_unzipped, path_of(encoded))
        if unzipped is not None:
            content, content_type = unzipped, mime_type_for(name)
    return Attachment(
        content_id=content_id,
        name=name,
        content_type=content_type,
        content=content,
        description=_text(e, "Description"),
    )


def _decode_base64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except binascii.Error:
        pass
    # Some producers wrap the base64 at 76 columns; only then pay for removing the breaks.
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except binascii.Error as exc:
        raise ValueError(f"the attachment is not valid base64 ({exc})") from None


def _single_zip_entry(data: bytes, max_unzipped: int, path: str) -> bytes | None:
    """The one file inside a producer's zip, or ``None`` when ``data`` is not such a zip."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError):
        return None  # labelled zip but sent raw: keep the bytes as they came
    with archive:
        entries = [i for i in archive.infolist() if not i.is_dir()]
        if len(entries) != 1:
            return None
        entry = entries[0]
        if entry.file_size > max_unzipped:
            raise PackageError(
                path,
                f"the zipped attachment expands to {entry.file_size} bytes,"
                f" over the limit of {max_unzipped}",
            )
        try:
            with archive.open(entry) as stream:
                # The declared size can lie: read one byte past the limit to catch it.
                content = stream.read(max_unzipped + 1)
        except (
            zipfile.BadZipFile,
            zlib.error,
            EOFError,
            OSError,
            RuntimeError,
            NotImplementedError,
        ) as exc:
            raise PackageError(path, f"the zipped attachment cannot be unzipped ({exc})") from None
        if len(content) > max_unzipped:
            raise PackageError(
                path, f"the zipped attachment expands past the limit of {max_unzipped} bytes"
            )
        return content
