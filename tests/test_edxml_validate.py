"""validate() lists every problem with its field path, on top of the XSD."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest

from lienthong.edxml import EdocPackage, build, new_edoc, validate
from lienthong.edxml.model import Attachment, OtherInfo, StatusPackage
from lienthong.edxml.validate import Problem

HEADER = "edXMLEnvelope/edXMLHeader/MessageHeader"
TODAY = dt.date(2025, 10, 1)


def _pkg(**changes: object) -> EdocPackage:
    pkg = new_edoc(
        from_code="000.00.00.G22",
        to_codes=["000.00.00.H49", "000.00.12.H49"],
        subject="Về việc kiểm tra",
        attachments=[("a.txt", b"abc", "text/plain")],
        today=dt.date(2025, 9, 30),
        number="12",
        notation="UBND-VP",
    )
    return dataclasses.replace(pkg, **changes)  # type: ignore[arg-type]


def _problems(pkg: EdocPackage | StatusPackage, today: dt.date = TODAY) -> list[Problem]:
    """Every finding, errors and deviations alike."""
    result = validate(build(pkg), today=today)
    return list(result.problems + result.deviations)


def _has(problems: list[Problem], path: str, fragment: str) -> bool:
    return any(p.path == path and fragment in p.message for p in problems)


def test_valid_package_has_no_problem() -> None:
    """A package made by new_edoc() validates and carries its model."""
    result = validate(build(_pkg()), today=TODAY)
    assert result.ok
    assert result.package == _pkg()


def test_future_date_depends_on_today() -> None:
    """The promulgation date is checked against ``today``: fine that day, refused the day before."""
    assert _problems(_pkg(), today=dt.date(2025, 9, 30)) == []
    problems = _problems(_pkg(), today=dt.date(2025, 9, 29))
    assert _has(problems, f"{HEADER}/PromulgationInfo/PromulgationDate", "in the future")


@pytest.mark.parametrize(
    ("field", "value", "limit"),
    [("Subject", "x" * 501, 500), ("Content", "y" * 501, 500)],
)
def test_text_length_limits(field: str, value: str, limit: int) -> None:
    """Texts over the limits seen in validators in use are named with the limit."""
    pkg = _pkg(**{field.lower(): value})
    assert _has(_problems(pkg), f"{HEADER}/{field}", f"over the limit of {limit}")
    assert not _problems(_pkg(**{field.lower(): value[:limit]}))


def test_code_notation_and_number_limits() -> None:
    """CodeNumber over 11 and CodeNotation over 30 characters are both reported."""
    pkg = _pkg(code=dataclasses.replace(_pkg().code, number="1" * 12, notation="N" * 31))
    problems = _problems(pkg)
    assert _has(problems, f"{HEADER}/Code/CodeNumber", "limit of 11")
    assert _has(problems, f"{HEADER}/Code/CodeNotation", "limit of 30")


def test_priority_and_amounts() -> None:
    """Priority outside 0..4 and amounts outside 16 bits are each reported."""
    info = OtherInfo(priority=5, promulgation_amount=65536, page_amount=-1)
    problems = _problems(_pkg(other_info=info))
    assert _has(problems, f"{HEADER}/OtherInfo/Priority", "0..4")
    assert _has(problems, f"{HEADER}/OtherInfo/PromulgationAmount", "0..65535")
    assert _has(problems, f"{HEADER}/OtherInfo/PageAmount", "0..65535")


def test_every_problem_is_listed() -> None:
    """Faults in several fields are all reported, not just the first."""
    pkg = _pkg(
        subject="s" * 600,
        to=(_pkg().to[0], _pkg().to[0], dataclasses.replace(_pkg().to[0], organ_id="bad")),
        other_info=OtherInfo(priority=9),
        document_id="000.00.00.G22,2025/09/30,13/UBND-VP",
    )
    problems = _problems(pkg)
    assert _has(problems, f"{HEADER}/Subject", "500")
    assert _has(problems, f"{HEADER}/To[2]/OrganId", "listed again")
    assert _has(problems, f"{HEADER}/To[3]/OrganId", "'bad'")
    assert _has(problems, f"{HEADER}/OtherInfo/Priority", "0..4")
    assert _has(problems, f"{HEADER}/DocumentId", "number '13' differs from '12'")
    assert len(problems) == 5
    errors = validate(build(pkg), today=TODAY).problems
    assert [p.path for p in errors] == [f"{HEADER}/To[2]/OrganId"]


def test_manifest_must_match_attachments() -> None:
    """An attachment with no manifest reference is reported at the attachment."""
    extra = Attachment("9", "b.txt", "text/plain", b"b")
    pkg = _pkg(attachments=(*_pkg().attachments, extra))
    problems = _problems(pkg)
    assert _has(problems, "AttachmentEncoded/Attachment[2]/ContentId", "no manifest reference")
    assert len(problems) == 1


def test_duplicate_content_ids_reported() -> None:
    """Two attachments with the same ContentId are reported."""
    pkg = _pkg(attachments=_pkg().attachments * 2, manifest=_pkg().manifest * 2)
    assert _has(_problems(pkg), "AttachmentEncoded/Attachment[2]/ContentId", "used twice")


def test_status_code_checked(data_dir: Path) -> None:
    """A status with a code outside the list is refused; the listed ones pass."""
    status = validate((data_dir / "status.xml").read_bytes()).package
    assert isinstance(status, StatusPackage)
    assert _problems(status) == []
    bad = dataclasses.replace(status, status_code="99")
    assert _has(_problems(bad), f"{HEADER}/StatusCode", "'99'")


def test_hostile_xml_is_one_problem() -> None:
    """Malformed XML gives one problem at ``/`` with the refusal message."""
    result = validate(b"<edXML><unclosed></edXML>")
    assert result.refusal == "malformed"
    assert [p.path for p in result.problems] == ["/"]
    assert "not well-formed" in result.problems[0].message


def test_xsd_problem_path_is_readable(data_dir: Path) -> None:
    """An XSD fault (an unknown element) names the element path without namespaces."""
    data = (
        (data_dir / "edoc_valid.xml")
        .read_bytes()
        .replace(b"<edXML:Subject>", b"<edXML:Nonsense/><edXML:Subject>")
    )
    problems = list(validate(data).deviations)
    assert any(
        p.path == f"{HEADER}/Nonsense" and "{" not in p.message and p.kind == "schema"
        for p in problems
    ), problems
