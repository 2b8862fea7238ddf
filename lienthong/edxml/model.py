"""The edXML package as typed values (QCVN 102:2016).

Every value is a frozen dataclass and every sequence a tuple, so packages compare and hash by
value: ``parse(build(pkg)) == pkg``. Optional elements are ``None`` when absent; an element
present but empty is ``""``. Real traffic lacks some elements the standard requires (spec
section 8): the model still holds such a package, with ``None`` for a missing date, signer,
document type number or trace hop agency, ``""`` for a missing text, and a ``DocumentId``
derived from the sender, date and code when the package gives none. Dates are
:class:`datetime.date`, timestamps naive :class:`datetime.datetime` in Vietnam local time,
as written by the producers. Values whose meaning differs between producers (``DocumentType``
numbers, ``SteeringType``) are kept as given.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal


class BusinessDocType(IntEnum):
    """What a package does to a document (``Bussiness/BussinessDocType``)."""

    NEW = 0
    REVOKE = 1
    UPDATE = 2
    REPLACE = 3


STATUS_CODES: dict[str, str] = {
    "01": "arrived",
    "02": "refused",
    "03": "accepted",
    "04": "assigned",
    "05": "being processed",
    "06": "completed",
    "13": "revocation requested",
    "15": "revocation or update accepted",
    "16": "revocation or update refused",
}
"""Status codes of status packages and their meaning (spec section 4)."""


@dataclass(frozen=True, slots=True)
class Organization:
    """An agency as named in ``From`` or ``To``."""

    organ_id: str
    organ_name: str
    organization_in_charge: str | None = None
    organ_add: str | None = None
    email: str | None = None
    telephone: str | None = None
    fax: str | None = None
    website: str | None = None


@dataclass(frozen=True, slots=True)
class Code:
    """Number and notation of a document, e.g. ``7816`` / ``VPCP-TTĐT``."""

    number: str
    notation: str


@dataclass(frozen=True, slots=True)
class PromulgationInfo:
    """Where and when the document was issued."""

    place: str
    date: dt.date | None


@dataclass(frozen=True, slots=True)
class DocumentType:
    """The producer's document type numbers, kept as given."""

    type: int | None
    type_detail: int | None = None
    type_name: str | None = None


@dataclass(frozen=True, slots=True)
class SignerInfo:
    """Who signed the paper document."""

    competence: str | None = None
    position: str | None = None
    full_name: str | None = None


@dataclass(frozen=True, slots=True)
class OtherInfo:
    """Secondary facts; ``priority`` 0 normal, 1 urgent, 2 very urgent, 3 express, 4 timed."""

    priority: int | None = None
    sphere_of_promulgation: str | None = None
    typer_notation: str | None = None
    promulgation_amount: int | None = None
    page_amount: int | None = None
    direction: str | None = None
    appendixes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ResponseFor:
    """A link to the document this package answers."""

    organ_id: str
    code: str
    promulgation_date: dt.date | None
    document_id: str


@dataclass(frozen=True, slots=True)
class TraceHeader:
    """One agency the package passed through, and when; either may be missing (axis hops)."""

    organ_id: str | None
    timestamp: dt.datetime | None


@dataclass(frozen=True, slots=True)
class StaffInfo:
    """A person to contact about a business action or a status."""

    department: str | None = None
    staff: str | None = None
    mobile: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class Receiver:
    """A recipient added (``receiver_type`` 1) or removed (0) by an update."""

    organ_id: str
    receiver_type: int


@dataclass(frozen=True, slots=True)
class BusinessDocumentInfo:
    """What an update changes: the document info, the receivers, or both."""

    document_info: int | None = None
    document_receiver: int | None = None
    receivers: tuple[Receiver, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplacementInfo:
    """A replaced document and the agencies concerned."""

    document_id: str
    organ_ids: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Business:
    """The business block (``Bussiness``): new, revoke, update or replace a document."""

    document_id: str
    doc_type: BusinessDocType = BusinessDocType.NEW
    reason: str | None = None
    paper: int | None = None
    staff: tuple[StaffInfo, ...] = ()
    document_infos: tuple[BusinessDocumentInfo, ...] = ()
    replacements: tuple[ReplacementInfo, ...] = ()


@dataclass(frozen=True, slots=True)
class ManifestReference:
    """A manifest entry; ``content_id`` is bare (the ``cid:`` prefix is a wire detail)."""

    content_id: str
    content_type: str | None = None
    description: str | None = None
    attachment_name: str | None = None


@dataclass(frozen=True, slots=True)
class Attachment:
    """An attached file, decoded (and unzipped when the producer zipped a single file)."""

    content_id: str
    name: str
    content_type: str
    content: bytes
    description: str | None = None


@dataclass(frozen=True, slots=True)
class EdocPackage:
    """A document package ("edoc")."""

    from_: Organization
    to: tuple[Organization, ...]
    code: Code
    promulgation: PromulgationInfo
    document_type: DocumentType
    subject: str
    signer: SignerInfo | None
    document_id: str
    content: str | None = None
    due_date: dt.date | None = None
    to_places: tuple[str, ...] = ()
    other_info: OtherInfo | None = None
    response_for: tuple[ResponseFor, ...] = ()
    steering_type: int | None = None
    traces: tuple[TraceHeader, ...] = ()
    business: Business | None = None
    manifest: tuple[ManifestReference, ...] = ()
    attachments: tuple[Attachment, ...] = ()
    signed: bool = False

    @property
    def kind(self) -> Literal["edoc"]:
        """Always ``"edoc"``."""
        return "edoc"

    @property
    def sender(self) -> str:
        """The sending agency's code (``From/OrganId``)."""
        return self.from_.organ_id

    @property
    def recipients(self) -> tuple[str, ...]:
        """The recipient agency codes (``To/OrganId``), in order."""
        return tuple(org.organ_id for org in self.to)


@dataclass(frozen=True, slots=True)
class StatusPackage:
    """A status package: how the recipient handles a document (spec section 4)."""

    from_: Organization
    response_for: ResponseFor
    status_code: str
    timestamp: dt.datetime
    staff: StaffInfo | None = None
    description: str | None = None
    traces: tuple[TraceHeader, ...] = ()
    signed: bool = False

    @property
    def kind(self) -> Literal["status"]:
        """Always ``"status"``."""
        return "status"

    @property
    def sender(self) -> str:
        """The reporting agency's code (``From/OrganId``)."""
        return self.from_.organ_id

    @property
    def recipients(self) -> tuple[str, ...]:
        """Empty: a status package names no ``To``; it goes back to the document's sender."""
        return ()

    @property
    def document_id(self) -> str:
        """The DocumentId of the document this status answers."""
        return self.response_for.document_id


Package = EdocPackage | StatusPackage
"""Either kind of package."""
