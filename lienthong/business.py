"""What a revoke, update or replace package asks of the copies already delivered (pure).

The business block (``TraceHeaderList/Bussiness``) of a document says what it does to an
earlier one: ``BussinessDocType`` 1 revokes ``Bussiness/DocumentId``, 2 updates it (the update
travels as a document of its own, which the office software applies), 3 replaces the documents
listed in ``ReplacementInfoList``. At each recipient the node marks the copies it revokes or
supersedes and answers 15 (accepted) or 16 (refused, with the reason) about the request.
"""

from __future__ import annotations

from dataclasses import dataclass

from lienthong.edxml.model import BusinessDocType, EdocPackage

ACCEPTED = "15"
REFUSED = "16"


@dataclass(frozen=True, slots=True)
class Request:
    """What ``package`` asks of earlier copies: ``withdraw`` lists the DocumentIds whose
    delivered copies are revoked (revoke) or superseded (replace)."""

    kind: BusinessDocType
    withdraw: tuple[str, ...]


def request_of(package: EdocPackage) -> Request | None:
    """The request a package carries, or None for a plain new document."""
    business = package.business
    if business is None or business.doc_type == BusinessDocType.NEW:
        return None
    if business.doc_type == BusinessDocType.REVOKE:
        return Request(business.doc_type, (business.document_id,))
    if business.doc_type == BusinessDocType.REPLACE:
        replaced = tuple(r.document_id for r in business.replacements) or (business.document_id,)
        return Request(business.doc_type, tuple(dict.fromkeys(replaced)))
    return Request(business.doc_type, ())


def answer(request: Request, withdrawn: dict[str, int]) -> tuple[str, list[str]]:
    """The status code and reasons for ``request``, given how many copies of each DocumentId
    were withdrawn here: 15 when every one named was found, else 16 naming those missing."""
    missing = [doc for doc in request.withdraw if withdrawn.get(doc, 0) == 0]
    if missing:
        return REFUSED, [f"document {doc} was not delivered here" for doc in missing]
    if request.kind == BusinessDocType.REVOKE:
        return ACCEPTED, [f"document {doc} revoked" for doc in request.withdraw]
    if request.kind == BusinessDocType.REPLACE:
        return ACCEPTED, [f"document {doc} replaced" for doc in request.withdraw]
    return ACCEPTED, ["update received"]
