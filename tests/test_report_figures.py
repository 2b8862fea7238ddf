"""The report's figures from records built by hand, whose right answers are known."""

from __future__ import annotations

import ast
import datetime as dt
from pathlib import Path

import pytest

from lienthong.receipts import VIETNAM
from lienthong.report.figures import (
    AgencyFigures,
    NodeRecords,
    Period,
    PeriodError,
    compute,
    percentile,
)
from lienthong.report.labels import count, duration, percent, period_text
from lienthong.report.reasons import REASONS, reason_of
from lienthong.store.lifecycle import PackageState
from lienthong.store.model import InboxEntry, PackageMeta, PackageRecord, Receipt
from lienthong.trust.verify import CHANGED

NODE = "000.00.00.H49"
DEPT = "000.00.01.H49"
FAR = "000.03.07.H41"
OTHER = "000.00.07.H41"
OCTOBER = Period(dt.date(2026, 10, 1), dt.date(2026, 10, 31))


def at(day: int, hour: int, minute: int = 0, month: int = 10) -> float:
    """An instant of 2026 in Vietnam local time."""
    return dt.datetime(2026, month, day, hour, minute, tzinfo=VIETNAM).timestamp()


def sent(
    number: int, sender: str, to: tuple[str, ...], when: float, pid: str = ""
) -> PackageRecord:
    """A document package submitted at its node."""
    doc = f"{sender},2026/10/01,{number}/UBND"
    meta = PackageMeta(doc, "edoc", sender, to, (pid or f"{number:064x}"), 100)
    return PackageRecord(pid or f"{number:064x}", meta, PackageState.DONE, None, when, when, None)


def came(
    number: int, sender: str, to: tuple[str, ...], when: float, state: PackageState
) -> PackageRecord:
    """A document package received from a neighbour, left in ``state`` at ``when``."""
    doc = f"{sender},2026/10/01,{number}/UBND"
    meta = PackageMeta(doc, "edoc", sender, to, f"f{number:063x}", 100)
    reason = "refused" if state == PackageState.QUARANTINED else None
    return PackageRecord(f"f{number:063x}", meta, state, "000.00.00.G22", when, when, reason)


def delivered(entry: int, record: PackageRecord, recipient: str, when: float) -> InboxEntry:
    """The inbox entry of ``record`` for ``recipient``."""
    m = record.meta
    return InboxEntry(
        entry, record.package_id, m.document_id, "edoc", m.sender, recipient, "new", when
    )


def status(record: PackageRecord, code: str, by: str, when: float, detail: str = "") -> Receipt:
    """A status receipt about ``record``'s document."""
    return Receipt(record.meta.document_id, "status", code, by, when, detail)


def row(report_rows: tuple[AgencyFigures, ...], agency: str) -> AgencyFigures:
    """The row of ``agency``."""
    return next(r for r in report_rows if r.agency == agency)


def test_sent_signed_and_time_to_status_01() -> None:
    """Documents sent count once each; a document is confirmed when every recipient's 01 has
    come, timed to the last one; same day means the Vietnam day of the submission."""
    d1 = sent(1, NODE, (DEPT, FAR), at(5, 9))  # 01s at 9:10 and 10:00: 1 h, same day
    d2 = sent(2, NODE, (FAR,), at(6, 23))  # 01 at 01:00 the next day: 2 h, not same day
    d3 = sent(3, NODE, (FAR,), at(7, 9))  # unsigned, never answered
    d4 = sent(4, NODE, (DEPT, FAR), at(8, 9))  # only one of two recipients answered
    records = NodeRecords(
        NODE,
        (NODE, DEPT),
        packages=(d1, d2, d3, d4),
        receipts=(
            status(d1, "01", DEPT, at(5, 9, 10)),
            status(d1, "01", FAR, at(5, 10)),
            status(d1, "01", FAR, at(5, 11)),  # a repeated 01 does not move the time
            status(d2, "01", FAR, at(7, 1)),
            status(d4, "01", DEPT, at(8, 9, 5)),
            status(d4, "03", FAR, at(8, 9, 6)),  # other statuses are not arrivals
        ),
        signed=frozenset({d1.package_id, d2.package_id, d4.package_id}),
    )
    figures = row(compute(OCTOBER, [records]).agencies, NODE)
    assert (figures.sent, figures.sent_signed, figures.signed_share) == (4, 3, 0.75)
    assert (figures.confirmed, figures.confirmed_same_day, figures.same_day_share) == (2, 1, 0.25)
    assert figures.times_to_01 == (3600.0, 7200.0)
    assert figures.median_to_01 == 5400.0
    assert figures.p95_to_01 == 7200.0


def test_period_is_vietnam_local_days_both_ends_included() -> None:
    """The first instant of the first day and the last of the last day are in; one second
    outside either end is not, in Vietnam time whatever the machine's zone."""
    inside = [at(1, 0), at(31, 23, 59) + 59]
    outside = [at(1, 0) - 1, at(1, 0, month=11)]
    packages = [sent(i, NODE, (FAR,), t) for i, t in enumerate(inside + outside, 1)]
    report = compute(OCTOBER, [NodeRecords(NODE, (NODE,), packages=tuple(packages))])
    assert row(report.agencies, NODE).sent == 2
    assert at(1, 0) == dt.datetime(2026, 9, 30, 17, tzinfo=dt.UTC).timestamp()


def test_received_verified_and_quarantined_per_local_recipient() -> None:
    """Received documents are the inbox deliveries and the quarantines of the period, for
    the agencies served here only; a document delivered by another copy is not counted as
    quarantined, and status packages are not documents."""
    ok = came(1, FAR, (NODE, DEPT), at(3, 8), PackageState.DELIVERED)
    bad = came(2, FAR, (DEPT, OTHER), at(4, 8), PackageState.QUARANTINED)
    again_bad = came(3, FAR, (NODE,), at(4, 9), PackageState.QUARANTINED)
    again_ok = came(3, FAR, (NODE,), at(4, 10), PackageState.DELIVERED)
    transit = came(4, FAR, (OTHER,), at(4, 11), PackageState.QUARANTINED)
    late = came(5, FAR, (NODE,), at(1, 8, month=11), PackageState.QUARANTINED)
    status_entry = InboxEntry(9, "e" * 64, "x", "status", FAR, NODE, "new", at(4, 12))
    records = NodeRecords(
        NODE,
        (NODE, DEPT),
        packages=(ok, bad, again_bad, again_ok, transit, late),
        inbox=(
            delivered(1, ok, NODE, at(3, 8)),
            delivered(2, ok, DEPT, at(3, 8)),
            delivered(3, again_ok, NODE, at(4, 10)),
            status_entry,
        ),
    )
    report = compute(OCTOBER, [records])
    node, dept = row(report.agencies, NODE), row(report.agencies, DEPT)
    assert (node.received, node.received_verified, node.received_quarantined) == (2, 2, 0)
    assert (dept.received, dept.received_verified, dept.received_quarantined) == (2, 1, 1)
    assert dept.verified_share == 0.5
    assert [r.agency for r in report.agencies] == [NODE, DEPT]  # OTHER is not served here


def test_refusals_are_grouped_by_reason_once_per_refusing_agency() -> None:
    """Each status 02 about a document sent in the period counts once per refusing agency,
    under the label of its first reason."""
    d1 = sent(1, NODE, (FAR, DEPT), at(5, 9))
    d2 = sent(2, NODE, (FAR,), at(6, 9))
    old = sent(3, NODE, (FAR,), at(30, 9, month=9))
    expiry = "not delivered within 7 days: expired at 000.00.00.G22 (it can be requeued there)"
    records = NodeRecords(
        NODE,
        (NODE,),
        packages=(d1, d2, old),
        receipts=(
            status(d1, "02", FAR, at(5, 10), f"{CHANGED}\n/edXMLEnvelope: bad"),
            status(d1, "02", FAR, at(5, 11), "the package is not signed"),  # the same agency
            status(d1, "02", DEPT, at(5, 12), "/edXMLEnvelope/Subject: too long"),
            status(d2, "02", "000.00.00.G22", at(13, 9), expiry),
            status(old, "02", FAR, at(1, 9), CHANGED),
        ),
    )
    figures = row(compute(OCTOBER, [records]).agencies, NODE)
    assert figures.refusals == {
        "signature": 1,
        "certificate": 0,
        "format": 1,
        "recipient": 0,
        "expired": 1,
        "other": 0,
    }
    assert figures.refused == 3


@pytest.mark.parametrize(
    ("description", "key"),
    [
        (CHANGED, "signature"),
        ("the package is not signed", "signature"),
        (
            "the signature value does not verify with the certificate it carries: the signed"
            " information or the certificate was replaced",
            "signature",
        ),
        ("the signature uses SHA-1 (rsa-sha1, digest sha1), a weak algorithm", "signature"),
        ("the signing certificate CN=X expired on 2026-01-01 00:00 UTC", "certificate"),
        ("the signing certificate CN=X was revoked on 2026-01-01 00:00 UTC", "certificate"),
        ("certificate CN=X may not sign for 000.00.00.H49", "certificate"),
        (
            "the signing certificate CN=X was not issued by a trusted CA (its issuer is Y)",
            "certificate",
        ),
        ("/edXMLEnvelope/edXMLHeader/MessageHeader/Subject: longer than 500", "format"),
        ("the package is not well-formed XML: line 1", "format"),
        (
            "recipient 000.00.09.H49: the recipient 000.00.09.H49 is not in the directory",
            "recipient",
        ),
        ("not delivered within 7 days: expired at 000.00.00.G22", "expired"),
        ("the clerk says no", "other"),
        ("", "other"),
    ],
)
def test_reason_labels(description: str, key: str) -> None:
    """The refusal reasons the checks write fall under the expected stable label."""
    assert reason_of(description).key == key


def test_reason_labels_are_stable() -> None:
    """The label keys, which are CSV column names, stay what they are."""
    assert [r.key for r in REASONS] == [
        "signature",
        "certificate",
        "format",
        "recipient",
        "expired",
        "other",
    ]


def test_every_served_agency_has_a_row_and_strangers_come_after() -> None:
    """Idle agencies get a row of zeros (with no shares or times); an agency no longer served
    but present in the records is listed after the served ones, not dropped."""
    stranger = sent(1, OTHER, (FAR,), at(5, 9))
    report = compute(
        OCTOBER, [NodeRecords(NODE, (NODE, DEPT), packages=(stranger,))], {NODE: "UBND tỉnh"}
    )
    assert [(r.agency, r.name) for r in report.agencies] == [
        (NODE, "UBND tỉnh"),
        (DEPT, DEPT),
        (OTHER, OTHER),
    ]
    idle = report.agencies[1]
    assert (idle.sent, idle.received, idle.signed_share, idle.median_to_01) == (0, 0, None, None)


def test_several_nodes_merge_and_the_total_pools_times() -> None:
    """The nodes of one province are read together; receipts seen twice count once, and the
    total adds the rows up with every time pooled."""
    d1 = sent(1, NODE, (FAR,), at(5, 9))
    d2 = sent(2, OTHER, (FAR,), at(5, 9))
    r1 = status(d1, "01", FAR, at(5, 9, 30))
    province = NodeRecords(NODE, (NODE,), packages=(d1,), receipts=(r1,))
    district = NodeRecords(
        OTHER, (OTHER,), packages=(d2,), receipts=(r1, status(d2, "01", FAR, at(5, 12)))
    )
    report = compute(OCTOBER, [province, district, province])
    assert report.nodes == (NODE, OTHER)
    assert row(report.agencies, NODE).times_to_01 == (1800.0,)
    assert report.total.sent == 2
    assert report.total.times_to_01 == (1800.0, 10800.0)
    assert report.total.median_to_01 == 6300.0


def test_the_same_document_twice_counts_once() -> None:
    """Two packages of one DocumentId (sent again with other bytes) are one document, timed
    from the first and signed if either was."""
    first = sent(1, NODE, (FAR,), at(5, 9), pid="a" * 64)
    second = sent(1, NODE, (FAR,), at(5, 10), pid="b" * 64)
    records = NodeRecords(
        NODE,
        (NODE,),
        packages=(second, first),
        receipts=(status(first, "01", FAR, at(5, 11)),),
        signed=frozenset({"b" * 64}),
    )
    figures = row(compute(OCTOBER, [records]).agencies, NODE)
    assert (figures.sent, figures.sent_signed, figures.times_to_01) == (1, 1, (7200.0,))


def test_percentile_is_nearest_rank() -> None:
    """The 95th percentile is a value that occurred: the ceil(0.95 n)-th smallest."""
    assert percentile(list(range(1, 21)), 95) == 19
    assert percentile([3.0, 1.0, 2.0], 95) == 3.0
    assert percentile([5.0], 95) == 5.0
    assert percentile([], 95) is None


def test_a_period_that_ends_before_it_starts_is_refused() -> None:
    """The error names both dates."""
    with pytest.raises(PeriodError, match=r"2026-09-30.*2026-10-01"):
        Period(dt.date(2026, 10, 1), dt.date(2026, 9, 30))


def test_numbers_are_written_the_vietnamese_way() -> None:
    """Decimal comma, thousands dot, durations in words, dates dd/mm/yyyy."""
    assert [percent(0.4), percent(1 / 3), percent(1.0), percent(None)] == [
        "40 %",
        "33,3 %",
        "100 %",
        "—",
    ]
    assert count(1234567) == "1.234.567"
    assert [duration(s) for s in (0, 45, 600, 3600, 5400, 7260, 86400 * 2 + 3 * 3600)] == [
        "0 giây",
        "45 giây",
        "10 phút",
        "1 giờ",
        "1 giờ 30 phút",
        "2 giờ 1 phút",
        "2 ngày 3 giờ",
    ]
    assert period_text(OCTOBER) == "01/10/2026 – 31/10/2026"


def test_figures_and_reasons_do_no_io() -> None:
    """The computing part imports no store, event loop, database or plotting library."""
    root = Path(__file__).resolve().parents[1] / "lienthong" / "report"
    forbidden = {"asyncio", "aiosqlite", "sqlite3", "matplotlib", "socket", "aiohttp"}
    for name in ("figures.py", "reasons.py", "labels.py", "table.py"):
        tree = ast.parse((root / name).read_text(encoding="utf-8"))
        imported = {
            alias.name.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.Import)
            for alias in n.names
        } | {
            n.module.split(".")[0]
            for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom) and n.module
        }
        assert not imported & forbidden, f"{name} imports {imported & forbidden}"
