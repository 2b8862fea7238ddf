"""Names, element order and text formats shared by parse, build and validate."""

from __future__ import annotations

import datetime as dt
import re

NS = "http://www.mic.gov.vn/TBT/QCVN_102_2016"
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"

_ORG = (
    "OrganId",
    "OrganizationInCharge",
    "OrganName",
    "OrganAdd",
    "Email",
    "Telephone",
    "Fax",
    "Website",
)

# The producers' element order, by parent element name. build() writes it; the normaliser
# sorts received children into it so one XSD (with xs:sequence) serves every producer.
ORDER: dict[str, tuple[str, ...]] = {
    "edXML": ("edXMLEnvelope", "AttachmentEncoded"),
    "edXMLEnvelope": ("edXMLHeader", "edXMLBody"),
    "edXMLHeader": ("MessageHeader", "TraceHeaderList", "Signature"),
    "MessageHeader": (
        "From",
        "To",
        "Code",
        "PromulgationInfo",
        "DocumentType",
        "Subject",
        "Content",
        "SignerInfo",
        "DueDate",
        "ToPlaces",
        "OtherInfo",
        "ResponseFor",
        "SteeringType",
        "DocumentId",
        "StaffInfo",
        "StatusCode",
        "Description",
        "Timestamp",
    ),
    "From": _ORG,
    "To": _ORG,
    "Code": ("CodeNumber", "CodeNotation"),
    "PromulgationInfo": ("Place", "PromulgationDate"),
    "DocumentType": ("Type", "TypeDetail", "TypeName"),
    "SignerInfo": ("Competence", "Position", "FullName"),
    "OtherInfo": (
        "Priority",
        "SphereOfPromulgation",
        "TyperNotation",
        "PromulgationAmount",
        "PageAmount",
        "Direction",
        "Appendixes",
        "ReplyFors",
        "ReferenceCodes",
    ),
    "ResponseFor": ("OrganId", "Code", "PromulgationDate", "DocumentId"),
    "StaffInfo": ("Department", "Staff", "Mobile", "Email"),
    "TraceHeaderList": ("TraceHeader", "Bussiness"),
    "TraceHeader": ("OrganId", "Timestamp"),
    "Bussiness": (
        "DocumentId",
        "BussinessDocType",
        "BussinessDocReason",
        "Paper",
        "StaffInfo",
        "BussinessDocumentInfo",
        "ReplacementInfoList",
    ),
    "BussinessDocumentInfo": ("DocumentInfo", "DocumentReceiver", "ReceiverList"),
    "Receiver": ("OrganId", "ReceiverType"),
    "ReplacementInfo": ("DocumentId", "OrganIdList"),
    "Reference": ("ContentId", "ContentType", "Description", "AttachmentName"),
    "Attachment": (
        "ContentId",
        "AttachmentName",
        "Description",
        "ContentType",
        "ContentTransferEncoded",
    ),
}


def field_name(element_name: str) -> str:
    """The model attribute for an element of a flat text group: ``OrganName`` -> ``organ_name``."""
    return re.sub(r"(?<!^)(?=[A-Z])", "_", element_name).lower()


_DATE_YMD = re.compile(r"^(\d{4})/(\d{1,2})/(\d{1,2})$")
_DATE_DMY = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_TIME = re.compile(r"^(\d{1,2}):(\d{2}):(\d{2})$")


def parse_date(text: str) -> dt.date:
    """``yyyy/MM/dd`` (or the older ``dd/MM/yyyy``) as a date; ``ValueError`` otherwise."""
    text = text.strip()
    if m := _DATE_YMD.match(text):
        y, mo, d = m.groups()
    elif m := _DATE_DMY.match(text):
        d, mo, y = m.groups()
    else:
        raise ValueError(f"{text!r} is not a date of the form yyyy/MM/dd")
    try:
        return dt.date(int(y), int(mo), int(d))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid date ({exc})") from None


def parse_timestamp(text: str) -> dt.datetime:
    """``yyyy/MM/dd HH:mm:ss`` (or ``dd/MM/yyyy HH:mm:ss``) as a naive datetime."""
    parts = text.split()
    if len(parts) != 2 or not (m := _TIME.match(parts[1])):
        raise ValueError(f"{text!r} is not a timestamp of the form yyyy/MM/dd HH:mm:ss")
    day = parse_date(parts[0])
    try:
        hour, minute, second = (int(g) for g in m.groups())
        return dt.datetime.combine(day, dt.time(hour, minute, second))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid timestamp ({exc})") from None


def format_date(value: dt.date) -> str:
    """The emitted date form, ``yyyy/MM/dd``."""
    return f"{value.year:04d}/{value.month:02d}/{value.day:02d}"


def format_timestamp(value: dt.datetime) -> str:
    """The emitted timestamp form, ``yyyy/MM/dd HH:mm:ss``."""
    return f"{format_date(value)} {value.hour:02d}:{value.minute:02d}:{value.second:02d}"


def document_id_for(sender: str, date: dt.date, number: str, notation: str) -> str:
    """The natural key of a document: ``<sender>,<yyyy/MM/dd>,<number>/<notation>``."""
    return f"{sender},{format_date(date)},{number}/{notation}"
