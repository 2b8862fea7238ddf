"""Check a package against the XSD and the rules XSD cannot state, naming every problem.

:func:`validate` never stops at the first fault: a package goes back to its sender with one
status 02 listing everything wrong, each problem with the path of the field at fault (e.g.
``edXMLEnvelope/edXMLHeader/MessageHeader/To[2]/OrganId``). It checks, in order: the XML is
safe and well-formed (else one problem, path ``/``); the normalised tree against
``schemas/edoc.xsd`` or ``schemas/status.xsd``; then the rules below, on the normalised tree so
they run even when no model can be built; finally it builds the model.

The schemas are read once, from ``lienthong/_schemas`` when the package is installed as a wheel,
else from the repository's top-level ``schemas/`` folder.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import cast

from lxml import etree

from lienthong.edxml._layout import NS, parse_date, parse_timestamp
from lienthong.edxml._tree import PackageError, normalise, path_of, readable_xsd_path
from lienthong.edxml.codes import code_problem
from lienthong.edxml.model import STATUS_CODES, Package
from lienthong.edxml.parse import DEFAULT_MAX_UNZIPPED, bare_content_id, package_from_tree
from lienthong.errors import XmlRefused
from lienthong.resources import shipped_dir
from lienthong.xmlsafe import DEFAULT_MAX_BYTES, DEFAULT_MAX_DEPTH, parse_xml

__all__ = ["DEVIATION_KINDS", "Problem", "ValidationResult", "validate"]

_Element = etree._Element

DEVIATION_KINDS: dict[str, str] = {
    "schema": "element missing, repeated, unknown or out of the standard's order",
    "length": "text longer than the standard's table allows",
    "integer": "integer field that is not an integer or out of its range",
    "empty": "empty element read as absent",
    "signer_info": "SignerInfo missing",
    "document_id": "DocumentId missing, not in the QCVN form, or not matching the header",
    "business_document_id": "Bussiness without DocumentId",
    "trace_header": "TraceHeader without an agency",
    "agency_code": "agency code outside the QCVN 102 form",
    "future_date": "promulgation date in the future",
}
"""The kinds of deviation from QCVN 102 that real traffic lives with (spec section 8), by the
label ``/metrics`` counts them under."""

ERROR = "error"
"""The ``kind`` of a :class:`Problem` that makes a package impossible or unsafe to process."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding: the field path, what is wrong, and its kind.

    ``kind`` is :data:`ERROR` for an error, else one of :data:`DEVIATION_KINDS`.
    """

    path: str
    message: str
    kind: str = ERROR

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"

    @property
    def is_error(self) -> bool:
        """True for an error, false for a deviation."""
        return self.kind == ERROR


@dataclass(frozen=True, slots=True)
class ValidationResult:
    """The verdict on a package.

    ``problems`` are the errors (the package cannot be processed safely); ``deviations`` the
    departures from QCVN 102 that real producers live with, refused only in strict mode.
    ``package`` is the model when one could be read (even if rules failed); ``refusal`` is the
    :class:`~lienthong.errors.XmlRefused` reason when the XML itself was refused.
    """

    problems: tuple[Problem, ...]
    package: Package | None = None
    refusal: str | None = None
    deviations: tuple[Problem, ...] = ()

    @property
    def ok(self) -> bool:
        """True when there is no error (deviations allowed)."""
        return not self.problems

    def refusals(self, *, strict: bool) -> tuple[Problem, ...]:
        """What refuses the package: the errors, and in strict mode the deviations too."""
        return self.problems + self.deviations if strict else self.problems


# Longest text seen accepted by validators in use (spec section 3), by (parent, element) or
# by element alone.
_LENGTHS: dict[tuple[str | None, str], int] = {
    (None, "Subject"): 500,
    (None, "Content"): 500,
    (None, "OrganAdd"): 500,
    (None, "OrganizationInCharge"): 500,
    (None, "AttachmentName"): 500,
    (None, "OrganName"): 200,
    (None, "TypeName"): 100,
    (None, "SphereOfPromulgation"): 100,
    (None, "Email"): 100,
    ("PromulgationInfo", "Place"): 50,
    ("ToPlaces", "Place"): 150,
    (None, "CodeNotation"): 30,
    (None, "Telephone"): 20,
    (None, "Fax"): 20,
    (None, "Website"): 20,
    (None, "CodeNumber"): 11,
    (None, "TyperNotation"): 10,
}

# Integer fields and their allowed range (None: any integer).
_INTEGERS: dict[tuple[str, str], tuple[int, int] | None] = {
    ("DocumentType", "Type"): None,
    ("DocumentType", "TypeDetail"): None,
    ("OtherInfo", "Priority"): (0, 4),
    ("OtherInfo", "PromulgationAmount"): (0, 65535),
    ("OtherInfo", "PageAmount"): (0, 65535),
    ("MessageHeader", "SteeringType"): None,
    ("Bussiness", "BussinessDocType"): (0, 3),
    ("Bussiness", "Paper"): (0, 1),
    ("BussinessDocumentInfo", "DocumentInfo"): (0, 1),
    ("BussinessDocumentInfo", "DocumentReceiver"): (0, 1),
    ("Receiver", "ReceiverType"): (0, 1),
}

# Integers that decide what a package does: a wrong one is an error, not a deviation.
_DECISIVE_INTEGERS = frozenset({("Bussiness", "BussinessDocType"), ("Receiver", "ReceiverType")})

# Fields whose text has a form, so that an empty one can only mean "absent".
_FORMED = frozenset({"PromulgationDate", "DueDate", "Timestamp", "OrganId", "DocumentId"})

# Where an empty OrganId is an error the model raises (no sender, no recipient, no answer).
_NEEDED_CODES = frozenset({"From", "To", "ResponseFor"})

_DOCUMENT_ID = re.compile(r"^([^,]+),(\d{4}/\d{2}/\d{2}),([^/,]+)/(.+)$")
_HEADER = ("edXMLEnvelope", "edXMLHeader", "MessageHeader")
_TRACE_LIST = ("edXMLEnvelope", "edXMLHeader", "TraceHeaderList")


def validate(
    data: bytes,
    *,
    today: dt.date | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = DEFAULT_MAX_DEPTH,
    max_unzipped: int = DEFAULT_MAX_UNZIPPED,
) -> ValidationResult:
    """Check ``data``; ``today`` (default: the local date) bounds the promulgation date.

    Every finding is either an error (``problems``) or a deviation (``deviations``); see
    :class:`ValidationResult`. The XSD states the standard, so what it finds is a deviation
    unless a rule here names the same field as an error.
    """
    try:
        root = parse_xml(data, max_bytes=max_bytes, max_depth=max_depth)
    except XmlRefused as exc:
        return ValidationResult((Problem("/", str(exc)),), refusal=exc.reason)
    try:
        normalised = normalise(root)
    except PackageError as exc:
        return ValidationResult((Problem(exc.path, exc.problem),))
    tree = normalised.root
    header = _find(tree, _HEADER)
    is_status = header is not None and header.find(f"{{{NS}}}StatusCode") is not None
    findings = _field_problems(tree, today or dt.date.today())
    if header is not None:
        findings += _header_problems(header, is_status)
    findings += _layout_problems(tree, header, is_status)
    findings += _attachment_problems(tree)
    package: Package | None = None
    try:
        package = package_from_tree(tree, signed=normalised.signed, max_unzipped=max_unzipped)
    except PackageError as exc:
        if not any(p.path == exc.path and p.is_error for p in findings):
            findings.append(Problem(exc.path, exc.problem))
    said = {p.path for p in findings}
    findings += [
        p for p in _xsd_problems(tree, "status" if is_status else "edoc") if p.path not in said
    ]
    errors = tuple(p for p in findings if p.is_error)
    deviations = tuple(p for p in findings if not p.is_error)
    return ValidationResult(errors, package, deviations=deviations)


def _find(tree: _Element, names: Iterable[str]) -> _Element | None:
    return tree.find("/".join(f"{{{NS}}}{n}" for n in names))


@functools.cache
def _schema(kind: str) -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    document = etree.parse(str(shipped_dir("schemas") / f"{kind}.xsd"), parser)
    return etree.XMLSchema(document)


def _xsd_problems(tree: _Element, kind: str) -> list[Problem]:
    schema = _schema(kind)
    if schema.validate(tree):
        return []
    return [
        Problem(readable_xsd_path(e.path or "/"), e.message.replace(f"{{{NS}}}", ""), kind="schema")
        for e in cast(Iterable[etree._LogEntry], schema.error_log)
    ]


def _named(tree: _Element) -> Iterator[tuple[_Element, str, str]]:
    """Every edXML element below the root with its parent's name and its own."""
    prefix = f"{{{NS}}}"
    for element in tree.iter(f"{prefix}*"):
        parent = element.getparent()
        if parent is None:
            continue
        yield element, etree.QName(parent).localname, etree.QName(element).localname


def _field_problems(tree: _Element, today: dt.date) -> list[Problem]:
    problems: list[Problem] = []
    for element, parent, name in _named(tree):
        if len(element):
            continue
        text = (element.text or "").strip()
        found = _field_problem(parent, name, text, today)
        if found:
            problems.append(Problem(path_of(element), *found))
    return problems


def _field_problem(parent: str, name: str, text: str, today: dt.date) -> tuple[str, str] | None:
    """``(message, kind)`` for one leaf field, or ``None`` when it is fine."""
    limit = _LENGTHS.get((parent, name)) or _LENGTHS.get((None, name))
    if limit is not None and len(text) > limit:
        return f"is {len(text)} characters long, over the limit of {limit}", "length"
    if not text and (name in _FORMED or (parent, name) in _INTEGERS):
        if name == "OrganId" and parent in _NEEDED_CODES:
            return None  # the model names the missing sender, recipient or answered document
        return "is empty; read as absent", "empty"
    if (parent, name) in _INTEGERS:
        message = _integer_problem(text, _INTEGERS[(parent, name)])
        if message is None:
            return None
        return message, ERROR if (parent, name) in _DECISIVE_INTEGERS else "integer"
    if name in ("PromulgationDate", "DueDate"):
        try:
            day = parse_date(text)
        except ValueError as exc:
            return str(exc), ERROR
        if parent == "PromulgationInfo" and day > today:
            return (
                f"the promulgation date {text} is in the future (today is {today})",
                "future_date",
            )
    elif name == "Timestamp":
        try:
            parse_timestamp(text)
        except ValueError as exc:
            return str(exc), ERROR
    elif name == "OrganId":
        if parent == "TraceHeader" and text == "null":
            return "is 'null': a hop without an agency", "trace_header"
        message = code_problem(text)
        return None if message is None else (message, "agency_code")
    elif name == "StatusCode" and text not in STATUS_CODES:
        return f"status code {text!r} is not one of {', '.join(STATUS_CODES)}", ERROR
    elif name == "DocumentId":
        return _document_id_problem(text)
    return None


def _document_id_problem(text: str) -> tuple[str, str] | None:
    match = _DOCUMENT_ID.match(text)
    if not match:
        form = "<sender code>,<yyyy/MM/dd>,<number>/<notation>"
        return f"DocumentId {text!r} is not of the form {form}", "document_id"
    try:
        parse_date(match.group(2))
    except ValueError as exc:
        return f"DocumentId {text!r}: {exc}", ERROR
    return None


def _integer_problem(text: str, bounds: tuple[int, int] | None) -> str | None:
    try:
        value = int(text)
    except ValueError:
        return f"{text!r} is not an integer"
    if bounds is not None and not bounds[0] <= value <= bounds[1]:
        return f"{value} is outside the range {bounds[0]}..{bounds[1]}"
    return None


def _child_text(parent: _Element, *names: str) -> str | None:
    element = parent.find("/".join(f"{{{NS}}}{n}" for n in names))
    return None if element is None else (element.text or "").strip()


def _header_problems(header: _Element, is_status: bool) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, str] = {}
    for to in header.findall(f"{{{NS}}}To"):
        organ_id = to.find(f"{{{NS}}}OrganId")
        if organ_id is None:
            continue
        code, path = (organ_id.text or "").strip(), path_of(organ_id)
        if code in seen:
            problems.append(
                Problem(path, f"recipient {code} is listed again (first at {seen[code]})")
            )
        else:
            seen[code] = path
    document_id = header.find(f"{{{NS}}}DocumentId")
    if is_status or document_id is None:
        return problems
    match = _DOCUMENT_ID.match((document_id.text or "").strip())
    if not match:
        return problems  # the form itself is reported by the field rules
    sender, day, number, notation = match.groups()
    expected = {
        "sender": (sender, _child_text(header, "From", "OrganId")),
        "number": (number, _child_text(header, "Code", "CodeNumber")),
        "notation": (notation, _child_text(header, "Code", "CodeNotation")),
    }
    for what, (found, wanted) in expected.items():
        if wanted is not None and found != wanted:
            problems.append(
                Problem(
                    path_of(document_id),
                    f"DocumentId {what} {found!r} differs from {wanted!r}",
                    "document_id",
                )
            )
    promulgated = _child_text(header, "PromulgationInfo", "PromulgationDate")
    try:
        differs = promulgated is not None and parse_date(day) != parse_date(promulgated)
    except ValueError:
        differs = False  # an invalid date is reported where it stands
    if differs:
        problems.append(
            Problem(
                path_of(document_id),
                f"DocumentId date {day} differs from PromulgationDate {promulgated}",
                "document_id",
            )
        )
    return problems


def _is_empty(element: _Element) -> bool:
    """No text anywhere below ``element``: ``<ResponseFor/>`` or children all empty."""
    return not "".join(str(t) for t in element.itertext()).strip()


def _layout_problems(tree: _Element, header: _Element | None, is_status: bool) -> list[Problem]:
    """The shapes real traffic has that the standard does not (deviations), and attachments
    where QCVN 102 has none (an error: they would be silently lost)."""
    problems: list[Problem] = []
    if header is not None and not is_status:
        path = path_of(header)
        if header.find(f"{{{NS}}}DocumentId") is None:
            problems.append(
                Problem(
                    f"{path}/DocumentId",
                    "is missing; the document is known by one made of its sender, date and code",
                    "document_id",
                )
            )
        signer = header.find(f"{{{NS}}}SignerInfo")
        if signer is None:
            problems.append(Problem(f"{path}/SignerInfo", "is missing", "signer_info"))
        elif _is_empty(signer):
            problems.append(Problem(path_of(signer), "is empty; read as absent", "empty"))
        for link in header.findall(f"{{{NS}}}ResponseFor"):
            if _is_empty(link):
                problems.append(Problem(path_of(link), "is empty; read as absent", "empty"))
    trace_list = _find(tree, _TRACE_LIST)
    if trace_list is not None:
        for hop in trace_list.findall(f"{{{NS}}}TraceHeader"):
            if hop.find(f"{{{NS}}}OrganId") is None:
                problems.append(
                    Problem(
                        f"{path_of(hop)}/OrganId",
                        "is missing: a hop without an agency",
                        "trace_header",
                    )
                )
        business = trace_list.find(f"{{{NS}}}Bussiness")
        if business is not None and business.find(f"{{{NS}}}DocumentId") is None:
            problems.append(
                Problem(
                    f"{path_of(business)}/DocumentId",
                    "is missing; the package's own DocumentId is taken",
                    "business_document_id",
                )
            )
    problems += _misplaced_attachments(tree)
    return problems


def _misplaced_attachments(tree: _Element) -> list[Problem]:
    """Attachment payloads outside ``AttachmentEncoded``: a layout other than QCVN 102."""
    places: dict[str, int] = {}
    for element in tree.iter(f"{{{NS}}}ContentTransferEncoded"):
        holder = element.getparent()
        place = None if holder is None else holder.getparent()
        if place is None or etree.QName(place).localname != "AttachmentEncoded":
            where = path_of(place if place is not None else element)
            places[where] = places.get(where, 0) + 1
    return [
        Problem(
            where,
            f"holds {count} attachment(s) where QCVN 102 has none (they belong in"
            " AttachmentEncoded, a child of edXML): this file is not in the QCVN 102 layout",
        )
        for where, count in places.items()
    ]


def _attachment_problems(tree: _Element) -> list[Problem]:
    """Manifest references and attachments must match one to one by ContentId."""
    references = tree.findall(
        f"{{{NS}}}edXMLEnvelope/{{{NS}}}edXMLBody/{{{NS}}}edXMLManifest/{{{NS}}}Reference/{{{NS}}}ContentId"
    )
    attachments = tree.findall(f"{{{NS}}}AttachmentEncoded/{{{NS}}}Attachment/{{{NS}}}ContentId")
    problems: list[Problem] = []
    sides = (
        ("manifest reference", references, attachments, "attachment"),
        ("attachment", attachments, references, "manifest reference"),
    )
    for what, mine, theirs, other in sides:
        their_ids = {bare_content_id(e.text or "") for e in theirs}
        seen: set[str] = set()
        for element in mine:
            content_id = bare_content_id(element.text or "")
            if content_id in seen:
                problems.append(
                    Problem(path_of(element), f"ContentId {content_id!r} is used twice")
                )
            elif content_id not in their_ids:
                problems.append(
                    Problem(
                        path_of(element),
                        f"no {other} matches this {what}'s ContentId {content_id!r}",
                    )
                )
            seen.add(content_id)
    return problems
