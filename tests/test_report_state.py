"""The monthly report at the size of the state (about 4,500 agencies): grouped by province and
tier, with the agencies that need attention listed first, and still a page a browser opens."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import pytest
from lxml import html as lxml_html
from test_report_store import browser, chromium  # noqa: F401 (a fixture)

from lienthong.devnet.network import topology_text
from lienthong.devnet.statesize import state_directory
from lienthong.directory import Directory
from lienthong.receipts import VIETNAM
from lienthong.report import NodeRecords, Period, compute, served_by
from lienthong.report.groups import CENTRAL, Place, by_region, needing_attention, places
from lienthong.report.page import to_html
from lienthong.store.lifecycle import PackageState
from lienthong.store.model import PackageMeta, PackageRecord, Receipt

NATIONAL, FAR = "000.00.00.G22", "000.03.07.H41"
OCTOBER = Period(dt.date(2026, 10, 1), dt.date(2026, 10, 31))
T0 = dt.datetime(2026, 10, 5, 9, tzinfo=VIETNAM).timestamp()
REFUSING = 7  # every 7th sender of the 700 had a document refused
LATE = 5  # every 5th (not refused) got its 01 two days later


@pytest.fixture(scope="module")
def state() -> tuple[Directory, NodeRecords]:
    """The state's directory, and the national node's records for the agencies it serves:
    700 of them sent one document each in October."""
    document = state_directory(tomllib.loads(topology_text("four-tier")), filler_nodes=False)
    directory = Directory.from_mapping(document)
    served = served_by(directory, NATIONAL)
    packages, receipts = [], []
    for i, agency in enumerate(served[:700]):
        digest = f"{i:064x}"
        meta = PackageMeta(f"{agency},2026/10/05,{i}/VT", "edoc", agency, (FAR,), digest, 10)
        packages.append(PackageRecord(digest, meta, PackageState.DONE, None, T0, T0, None))
        if i % REFUSING == 0:
            receipts.append(
                Receipt(meta.document_id, "status", "02", FAR, T0 + 60, "signature refused")
            )
        else:
            late = 2 * 86400 if i % LATE == 0 else 0
            receipts.append(Receipt(meta.document_id, "status", "01", FAR, T0 + 60 + late))
    return directory, NodeRecords(NATIONAL, served, tuple(packages), tuple(receipts))


def test_agencies_are_placed_in_their_province_and_tier(
    state: tuple[Directory, NodeRecords],
) -> None:
    """Departments and communes of a province go to it by tier; ministries and the national
    agency to the central bodies; an agency the directory no longer lists is kept apart."""
    directory, _ = state
    placed = places(directory, [NATIONAL, "000.00.00.H49", "000.00.01.H49", FAR, "000.00.00.H02"])
    quang_nam = directory.agency("000.00.00.H49").name
    assert placed["000.00.00.H49"] == Place("000.00.00.H49", quang_nam, 1)
    assert placed["000.00.01.H49"] == Place("000.00.00.H49", quang_nam, 2)
    assert placed[FAR].region == "000.00.00.H41"
    assert placed[FAR].tier == 3
    assert placed[NATIONAL].region == CENTRAL
    assert places(directory, ["000.09.09.H49"])["000.09.09.H49"].region == "other"


@pytest.mark.usefixtures("browser")
def test_the_state_sized_report_has_a_line_per_province_and_lists_who_needs_attention(
    state: tuple[Directory, NodeRecords], tmp_path: Path
) -> None:
    """Some 4,400 agencies make one line per province in the table and the charts (not one
    per agency); the refused senders lead the attention list, then the late ones; the page
    opens in headless Chromium with the same tables."""
    directory, records = state
    names = {c: directory.agency(c).name for c in directory.codes}
    report = compute(OCTOBER, [records], names)
    assert len(report.agencies) > 4000
    placed = places(directory, records.served)
    regions = by_region(report, placed)
    assert 30 <= len(regions) <= 40
    assert sum(r.sent for r in regions) == report.total.sent == 700

    attention = needing_attention(report.agencies)
    refused = 700 // REFUSING
    late = sum(1 for i in range(700) if i % LATE == 0 and i % REFUSING != 0)
    assert len(attention) == refused + late
    assert all(a.row.refused == 1 for a in attention[:refused])
    assert all(len(a.reasons) == 1 for a in attention)
    assert all(a.row.same_day_share == 0 for a in attention[refused:])

    page = tmp_path / "state.html"
    page.write_text(to_html(report, names, T0, placed), encoding="utf-8")
    assert page.stat().st_size < 2_000_000
    dom = lxml_html.fromstring(chromium(tmp_path, page.as_uri(), "--dump-dom").stdout)
    figures = dom.xpath('//table[@id="figures"]/tbody/tr')
    assert len(figures) == len(regions) + 1  # and the total
    listed = dom.xpath('//table[@id="attention"]/tbody/tr')
    assert len(listed) == 40
    assert f"và {len(attention) - 40} cơ quan khác" in dom.text_content()
    svgs = dom.xpath("//figure/*[local-name()='svg']")
    assert len(svgs) == 3
    labels = svgs[0].xpath(".//*[local-name()='g'][starts-with(@id, 'ytick_')]")
    assert len(labels) == len(regions)
