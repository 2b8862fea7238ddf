"""The report written out: stable CSV columns, a self-contained HTML page with three charts."""

from __future__ import annotations

import csv
import datetime as dt
import io
import tomllib
import warnings
from pathlib import Path

from lxml import html as lxml_html
from matplotlib import font_manager

from lienthong.devnet.network import topology_text
from lienthong.receipts import VIETNAM
from lienthong.report import NodeRecords, Period, compute, to_csv
from lienthong.report.charts import same_day, sent_received, time_classes, time_to_01
from lienthong.report.page import to_html
from lienthong.store.lifecycle import PackageState
from lienthong.store.model import PackageMeta, PackageRecord, Receipt

NODE, DEPT, FAR = "000.00.00.H49", "000.00.01.H49", "000.03.07.H41"
OCTOBER = Period(dt.date(2026, 10, 1), dt.date(2026, 10, 31))
T0 = dt.datetime(2026, 10, 5, 9, tzinfo=VIETNAM).timestamp()
NAMES = {NODE: "UBND tỉnh Quảng Nam", DEPT: "Sở <Nội vụ> & $Tài chính$"}


def _records() -> NodeRecords:
    meta = PackageMeta(f"{NODE},2026/10/05,1/VT", "edoc", NODE, (FAR,), "a" * 64, 10)
    record = PackageRecord("a" * 64, meta, PackageState.DONE, None, T0, T0, None)
    receipt = Receipt(meta.document_id, "status", "01", FAR, T0 + 1800)
    return NodeRecords(
        NODE, (NODE, DEPT), (record,), (receipt,), signed=frozenset({record.package_id})
    )


def test_csv_header_is_stable_and_rows_are_raw_numbers() -> None:
    """The CSV header is fixed; counts are integers, shares 0..1, times whole seconds, and a
    figure without a value is empty."""
    text = to_csv(compute(OCTOBER, [_records()], NAMES))
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == [
        "period_from",
        "period_to",
        "agency",
        "name",
        "sent",
        "sent_signed",
        "signed_share",
        "received",
        "received_verified",
        "received_quarantined",
        "verified_share",
        "confirmed",
        "confirmed_same_day",
        "same_day_share",
        "median_to_01_s",
        "p95_to_01_s",
        "refused",
        "refused_signature",
        "refused_certificate",
        "refused_format",
        "refused_recipient",
        "refused_expired",
        "refused_other",
    ]
    node = dict(zip(rows[0], rows[1], strict=True))
    assert node["name"] == "UBND tỉnh Quảng Nam"
    assert (node["sent"], node["signed_share"], node["median_to_01_s"]) == ("1", "1.0000", "1800")
    assert (node["received"], node["verified_share"]) == ("0", "")
    assert len(rows) == 3  # one row per agency, no total
    assert text.endswith("\r\n")


def test_html_page_is_self_contained_and_escapes_names() -> None:
    """The page loads nothing from elsewhere, holds three inline SVG charts, and shows agency
    names as text even when they look like markup."""
    page = to_html(compute(OCTOBER, [_records()], NAMES), NAMES, T0)
    dom = lxml_html.fromstring(page)
    assert dom.xpath("//script") == []
    assert dom.xpath("//*[@src]") == []
    assert dom.xpath("//link") == []
    assert len(dom.xpath("//figure/*[local-name()='svg']")) == 3
    assert "Sở <Nội vụ> & $Tài chính$" in dom.xpath('//table[@id="figures"]')[0].text_content()
    assert dom.findtext(".//strong[@id='nodes']") == "UBND tỉnh Quảng Nam (000.00.00.H49)"
    assert dom.findtext(".//title") == "Báo cáo liên thông văn bản điện tử 01/10/2026 – 31/10/2026"
    same_day = dom.xpath('//td[@data-agency="000.00.00.H49"][@data-key="same_day_share"]')
    assert same_day[0].text_content() == "100 %"
    assert "Không có văn bản nào bị từ chối" in page


def test_an_empty_report_still_renders() -> None:
    """No node and no record: the page and the CSV are made, with dashes and zeros."""
    report = compute(Period(dt.date(2026, 10, 1), dt.date(2026, 10, 1)), [])
    assert to_csv(report).count("\r\n") == 1
    dom = lxml_html.fromstring(to_html(report, {}, T0))
    assert dom.findtext(".//strong[@id='period']") == "01/10/2026"
    total = dom.xpath('//td[@data-agency=""][@data-key="median_to_01_s"]')
    assert total[0].text_content() == "—"


def test_time_classes_split_at_their_bounds() -> None:
    """A time on a class's upper bound belongs to the next class."""
    times = [0, 899, 900, 3599, 3600, 4 * 3600, 86400, 3 * 86400, 30 * 86400]
    assert time_classes(times) == [2, 2, 1, 1, 1, 2]


def test_vietnamese_names_draw_without_missing_glyphs() -> None:
    """Every agency name of the shipped directory and every chart label draws in DejaVu Sans
    with no glyph missing (matplotlib warns on a missing glyph; here that fails)."""
    directory = tomllib.loads(topology_text("four-tier"))
    names = {a["code"]: a["name"] for a in directory["agency"]}
    served = tuple(names)
    report = compute(OCTOBER, [NodeRecords(NODE, served)], names)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        svgs = [sent_received(report), same_day(report), time_to_01(report)]
    assert all(svg.startswith("<svg") for svg in svgs)
    assert Path(font_manager.findfont("DejaVu Sans", fallback_to_default=False)).exists()
