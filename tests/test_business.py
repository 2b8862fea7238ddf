"""Revoke, update and replace requests and the 15/16 answers they get (pure)."""

from __future__ import annotations

import dataclasses
import datetime as dt

from lienthong.business import ACCEPTED, REFUSED, answer, request_of
from lienthong.edxml import BusinessDocType, new_edoc
from lienthong.edxml.model import Business, EdocPackage, ReplacementInfo

OLD = "000.00.00.H49,2026/11/01,7/UBND-VP"


def _package(business: Business | None) -> EdocPackage:
    pkg = new_edoc(
        from_code="000.00.00.H49",
        to_codes=["000.00.05.H49"],
        subject="Thu hồi",
        attachments=[],
        today=dt.date(2026, 11, 22),
    )
    return dataclasses.replace(pkg, business=business)


def test_new_document_asks_nothing() -> None:
    """No business block, or doc type 0, is a plain document."""
    assert request_of(_package(None)) is None
    assert request_of(_package(Business(OLD, BusinessDocType.NEW))) is None


def test_revoke_found_is_accepted() -> None:
    """A revocation whose document was delivered here is answered 15."""
    request = request_of(_package(Business(OLD, BusinessDocType.REVOKE)))
    assert request is not None
    assert request.withdraw == (OLD,)
    code, reasons = answer(request, {OLD: 1})
    assert code == ACCEPTED
    assert reasons == [f"document {OLD} revoked"]


def test_revoke_not_found_is_refused_naming_it() -> None:
    """A revocation of a document never delivered here is answered 16 with the reason."""
    request = request_of(_package(Business(OLD, BusinessDocType.REVOKE)))
    assert request is not None
    code, reasons = answer(request, {})
    assert code == REFUSED
    assert reasons == [f"document {OLD} was not delivered here"]


def test_replace_withdraws_every_listed_document() -> None:
    """A replacement names each replaced document; any missing one makes it a 16."""
    other = "000.00.00.H49,2026/11/02,8/UBND-VP"
    business = Business(
        OLD,
        BusinessDocType.REPLACE,
        replacements=(ReplacementInfo(OLD), ReplacementInfo(other)),
    )
    request = request_of(_package(business))
    assert request is not None
    assert request.withdraw == (OLD, other)
    assert answer(request, {OLD: 1, other: 1})[0] == ACCEPTED
    assert answer(request, {OLD: 1})[0] == REFUSED


def test_update_withdraws_nothing_and_is_accepted() -> None:
    """An update is delivered as its own document; the request itself is accepted."""
    request = request_of(_package(Business(OLD, BusinessDocType.UPDATE)))
    assert request is not None
    assert request.withdraw == ()
    assert answer(request, {}) == (ACCEPTED, ["update received"])
