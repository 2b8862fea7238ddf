"""Write a package model as canonical edXML bytes.

The canonical form is what the main producers emit: UTF-8 with an XML declaration, the edXML
namespace as the default on the root ``<edXML>`` and bound to the prefix ``edXML:`` on every
child, the producers' element order, ``Bussiness``, dates ``yyyy/MM/dd``, attachments base64 in
``AttachmentEncoded`` with ``cid:`` ids in the manifest. No ``Signature`` is written: the trust
layer signs the built bytes and inserts ``ds:Signature`` into ``edXMLHeader`` right after
``TraceHeaderList`` (see :data:`SIGNATURE_PLACE`).

Text values are written as the model holds them; ``parse`` strips surrounding white space, so a
model round-trips when its text carries none (as every parsed model does).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from typing import Union

from lienthong.edxml._layout import NS, ORDER, field_name, format_date, format_timestamp
from lienthong.edxml.model import (
    Attachment,
    Business,
    EdocPackage,
    ManifestReference,
    Organization,
    OtherInfo,
    Package,
    ResponseFor,
    SignerInfo,
    StaffInfo,
    StatusPackage,
    TraceHeader,
)

__all__ = ["SIGNATURE_PLACE", "build", "manifest_for"]

SIGNATURE_PLACE = ("edXMLEnvelope", "edXMLHeader", "TraceHeaderList")
"""The signature goes into ``edXMLHeader``, as the sibling following ``TraceHeaderList``."""

# An element: its name and either its text or its children; ``None`` entries are left out.
_Node = tuple[str, Union[str, "list[_Node | None]"]]
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def build(pkg: Package) -> bytes:
    """The canonical edXML bytes of ``pkg``; ``ValueError`` for text XML cannot carry."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>\n', f'<edXML xmlns="{NS}" xmlns:edXML="{NS}">\n']
    if isinstance(pkg, StatusPackage):
        header = _status_header(pkg)
        body: list[_Node | None] = []
    else:
        header = _edoc_header(pkg)
        body = [("edXMLBody", [("edXMLManifest", [_reference(r) for r in pkg.manifest])])]
    envelope: _Node = ("edXMLEnvelope", [("edXMLHeader", [header, _trace_list(pkg)]), *body])
    _write(envelope, 1, out)
    if isinstance(pkg, EdocPackage) and pkg.attachments:
        _write(("AttachmentEncoded", [_attachment(a) for a in pkg.attachments]), 1, out)
    out.append("</edXML>\n")
    return "".join(out).encode("utf-8")


def manifest_for(attachments: tuple[Attachment, ...]) -> tuple[ManifestReference, ...]:
    """The manifest references matching ``attachments`` one to one."""
    return tuple(
        ManifestReference(a.content_id, a.content_type, a.description, a.name) for a in attachments
    )


def _escape(text: str) -> str:
    if _NOT_XML.search(text):
        raise ValueError(f"text {text[:40]!r} holds characters XML 1.0 cannot carry")
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    )


def _write(node: _Node, depth: int, out: list[str]) -> None:
    name, value = node
    pad = "  " * depth
    tag = f"edXML:{name}"
    opening = f'{tag} version="1.0"' if name == "edXMLManifest" else tag
    if isinstance(value, str):
        out.append(f"{pad}<{opening}>{_escape(value)}</{tag}>\n")
        return
    children = [c for c in value if c is not None]
    if not children:
        out.append(f"{pad}<{opening}/>\n")
        return
    out.append(f"{pad}<{opening}>\n")
    for child in children:
        _write(child, depth + 1, out)
    out.append(f"{pad}</{tag}>\n")


def _leaf(name: str, value: str | int | None) -> _Node | None:
    return None if value is None else (name, str(value))


def _date_leaf(name: str, value: dt.date | None) -> _Node | None:
    return None if value is None else (name, format_date(value))


def _flat(name: str, group: str, value: Organization | SignerInfo | StaffInfo) -> _Node:
    return (name, [_leaf(n, getattr(value, field_name(n))) for n in ORDER[group]])


def _organization(name: str, org: Organization) -> _Node:
    return _flat(name, "From", org)


def _edoc_header(pkg: EdocPackage) -> _Node:
    dtype = pkg.document_type
    return (
        "MessageHeader",
        [
            _organization("From", pkg.from_),
            *(_organization("To", org) for org in pkg.to),
            (
                "Code",
                [_leaf("CodeNumber", pkg.code.number), _leaf("CodeNotation", pkg.code.notation)],
            ),
            (
                "PromulgationInfo",
                [
                    _leaf("Place", pkg.promulgation.place),
                    _date_leaf("PromulgationDate", pkg.promulgation.date),
                ],
            ),
            (
                "DocumentType",
                [
                    _leaf("Type", dtype.type),
                    _leaf("TypeDetail", dtype.type_detail),
                    _leaf("TypeName", dtype.type_name),
                ],
            ),
            _leaf("Subject", pkg.subject),
            _leaf("Content", pkg.content),
            None if pkg.signer is None else _flat("SignerInfo", "SignerInfo", pkg.signer),
            _date_leaf("DueDate", pkg.due_date),
            ("ToPlaces", [_leaf("Place", p) for p in pkg.to_places]) if pkg.to_places else None,
            None if pkg.other_info is None else _other_info(pkg.other_info),
            *(_response_for(r) for r in pkg.response_for),
            _leaf("SteeringType", pkg.steering_type),
            _leaf("DocumentId", pkg.document_id),
        ],
    )


def _status_header(pkg: StatusPackage) -> _Node:
    return (
        "MessageHeader",
        [
            _organization("From", pkg.from_),
            _response_for(pkg.response_for),
            None if pkg.staff is None else _staff(pkg.staff),
            _leaf("StatusCode", pkg.status_code),
            _leaf("Description", pkg.description),
            _leaf("Timestamp", format_timestamp(pkg.timestamp)),
        ],
    )


def _other_info(info: OtherInfo) -> _Node:
    appendixes = [_leaf("Appendix", a) for a in info.appendixes]
    return (
        "OtherInfo",
        [
            _leaf("Priority", info.priority),
            _leaf("SphereOfPromulgation", info.sphere_of_promulgation),
            _leaf("TyperNotation", info.typer_notation),
            _leaf("PromulgationAmount", info.promulgation_amount),
            _leaf("PageAmount", info.page_amount),
            _leaf("Direction", info.direction),
            ("Appendixes", appendixes) if appendixes else None,
        ],
    )


def _response_for(r: ResponseFor) -> _Node:
    return (
        "ResponseFor",
        [
            _leaf("OrganId", r.organ_id),
            _leaf("Code", r.code),
            _date_leaf("PromulgationDate", r.promulgation_date),
            _leaf("DocumentId", r.document_id),
        ],
    )


def _staff(s: StaffInfo) -> _Node:
    return _flat("StaffInfo", "StaffInfo", s)


def _trace(t: TraceHeader) -> _Node:
    return (
        "TraceHeader",
        [
            _leaf("OrganId", t.organ_id),
            _leaf("Timestamp", None if t.timestamp is None else format_timestamp(t.timestamp)),
        ],
    )


def _trace_list(pkg: Package) -> _Node:
    # Written even when empty: it is the anchor the signature is inserted after.
    business = pkg.business if isinstance(pkg, EdocPackage) else None
    traces: list[_Node | None] = [_trace(t) for t in pkg.traces]
    return ("TraceHeaderList", [*traces, None if business is None else _business(business)])


def _business(b: Business) -> _Node:
    infos: list[_Node | None] = [
        (
            "BussinessDocumentInfo",
            [
                _leaf("DocumentInfo", info.document_info),
                _leaf("DocumentReceiver", info.document_receiver),
                (
                    "ReceiverList",
                    [
                        (
                            "Receiver",
                            [_leaf("OrganId", r.organ_id), _leaf("ReceiverType", r.receiver_type)],
                        )
                        for r in info.receivers
                    ],
                )
                if info.receivers
                else None,
            ],
        )
        for info in b.document_infos
    ]
    replacements: list[_Node | None] = [
        (
            "ReplacementInfo",
            [
                _leaf("DocumentId", r.document_id),
                ("OrganIdList", [_leaf("OrganId", o) for o in r.organ_ids])
                if r.organ_ids
                else None,
            ],
        )
        for r in b.replacements
    ]
    return (
        "Bussiness",
        [
            _leaf("DocumentId", b.document_id),
            _leaf("BussinessDocType", int(b.doc_type)),
            _leaf("BussinessDocReason", b.reason),
            _leaf("Paper", b.paper),
            *(_staff(s) for s in b.staff),
            *infos,
            ("ReplacementInfoList", replacements) if replacements else None,
        ],
    )


def _reference(r: ManifestReference) -> _Node:
    return (
        "Reference",
        [
            _leaf("ContentId", f"cid:{r.content_id}"),
            _leaf("ContentType", r.content_type),
            _leaf("Description", r.description),
            _leaf("AttachmentName", r.attachment_name),
        ],
    )


def _attachment(a: Attachment) -> _Node:
    return (
        "Attachment",
        [
            _leaf("ContentId", a.content_id),
            _leaf("AttachmentName", a.name),
            _leaf("Description", a.description),
            _leaf("ContentType", a.content_type),
            _leaf("ContentTransferEncoded", base64.b64encode(a.content).decode("ascii")),
        ],
    )
