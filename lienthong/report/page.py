"""The report as one self-contained HTML page: no script, no file beside it, charts inline.

Read top to bottom by someone who has never seen it: the title with the period and the
node(s), four headline figures, the agencies that need attention, the table per agency (per
province past :data:`AGENCY_ROWS` agencies, see :mod:`~lienthong.report.groups`), the
refusals by reason, the three charts, then one line per figure saying what it counts. Every
figure cell carries ``data-agency`` and ``data-key`` (the CSV column name) so programs can
read the page too.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from html import escape

from lienthong.receipts import VIETNAM
from lienthong.report import charts, groups
from lienthong.report.figures import AgencyFigures, Report
from lienthong.report.groups import Attention, Place
from lienthong.report.labels import (
    RECEIVED,
    REFUSED,
    SAME_DAY_SHARE,
    SENT,
    SIGNED_SHARE,
    TABLE_COLUMNS,
    Column,
    count,
    period_text,
)
from lienthong.report.reasons import REASONS

TITLE = "Báo cáo liên thông văn bản điện tử"
TITLE_EN = "electronic document exchange report"
TOTAL_NAME = "Tổng cộng (total)"
AGENCY_ROWS = 60
"""Up to this many agencies the page has a line and a bar per agency; more are grouped."""
ATTENTION_ROWS = 40
"""The agencies that need attention listed at most (the CSV has every one)."""

_CSS = """
body { font-family: "DejaVu Sans", Arial, sans-serif; color: #222; margin: 24px 32px;
       max-width: 1180px; }
h1 { font-size: 24px; margin: 0 0 4px; }
h1 small { font-weight: normal; color: #555; font-size: 16px; }
h2 { font-size: 18px; margin: 28px 0 8px; border-bottom: 2px solid #1f5fa8; padding-bottom: 4px; }
.meta { color: #444; margin: 2px 0; }
.tiles { display: flex; gap: 16px; margin: 20px 0 8px; }
.tile { flex: 1; border: 1px solid #cfd8e3; border-radius: 6px; padding: 10px 14px;
        background: #f5f8fc; }
.tile .value { font-size: 28px; font-weight: bold; color: #1f5fa8; }
.tile .name { font-size: 13px; color: #444; }
table { border-collapse: collapse; width: 100%; font-size: 13px; }
th, td { border: 1px solid #cfd8e3; padding: 5px 7px; }
th { background: #e8eef6; font-weight: 600; vertical-align: bottom; }
th small { display: block; font-weight: normal; color: #555; }
td.num { text-align: right; white-space: nowrap; }
tr.total td { font-weight: bold; background: #f5f8fc; }
td .code { display: block; color: #666; font-size: 11px; }
figure { margin: 8px 0 20px; }
figure svg { max-width: 100%; height: auto; }
.notes { font-size: 12px; color: #444; }
.notes dt { font-weight: 600; margin-top: 6px; }
.notes dd { margin-left: 16px; }
"""

NOTES: tuple[tuple[str, str], ...] = (
    (
        "Văn bản gửi (sent)",
        "văn bản do cơ quan gửi đi qua nút trong kỳ, mỗi văn bản (DocumentId) tính một lần;"
        " tỷ lệ ký số: phần đã mang chữ ký số.",
    ),
    (
        "Văn bản nhận (received)",
        "văn bản gửi đến cơ quan trong kỳ: đã xác thực (chữ ký và định dạng đúng, đã vào hộp"
        " thư đến) hoặc bị cách ly (bị từ chối, đã báo 02 cho nơi gửi).",
    ),
    (
        "Thời gian đến 01 (time to status 01)",
        "từ lúc gửi đến khi nơi nhận cuối cùng báo trạng thái 01 (đã đến); 95 %: 95 phần trăm"
        " số văn bản được xác nhận trong khoảng thời gian này hoặc nhanh hơn.",
    ),
    (
        "Xác nhận trong ngày (same-day confirmation)",
        "văn bản gửi mà mọi nơi nhận đều báo 01 ngay trong ngày gửi (giờ Việt Nam), trên tổng"
        " số văn bản gửi; mục tiêu 100 %.",
    ),
    (
        "Bị từ chối (refused)",
        "số trạng thái 02 nhận được cho văn bản gửi trong kỳ, theo lý do.",
    ),
)


def _agency_cell(row: AgencyFigures) -> str:
    if not row.agency:
        return f"<td>{escape(row.name)}</td>"
    return f'<td>{escape(row.name)}<span class="code">{escape(row.agency)}</span></td>'


def _cell(key: str, text: str, row: AgencyFigures) -> str:
    return (
        f'<td class="num" data-agency="{escape(row.agency)}" data-key="{escape(key)}">'
        f"{escape(text)}</td>"
    )


def _table(
    table_id: str,
    headings: Iterable[tuple[str, str]],
    rows: Sequence[AgencyFigures],
    cells: Callable[[AgencyFigures], str],
) -> str:
    """A table with one line per row (the last one the total) after the agency's name."""
    head = "".join(f"<th>{escape(vi)}<small>({escape(en)})</small></th>" for vi, en in headings)
    body = []
    for i, row in enumerate(rows):
        kind = ' class="total"' if i == len(rows) - 1 else ""
        body.append(f"<tr{kind}>{_agency_cell(row)}{cells(row)}</tr>")
    return (
        f'<table id="{table_id}"><thead><tr><th>Cơ quan<small>(agency)</small></th>{head}</tr>'
        f"</thead><tbody>{''.join(body)}</tbody></table>"
    )


def _figures_table(rows: Sequence[AgencyFigures], total: AgencyFigures) -> str:
    return _table(
        "figures",
        ((c.vi, c.en) for c in TABLE_COLUMNS),
        [*rows, total],
        lambda row: "".join(_cell(c.key, c.text(row), row) for c in TABLE_COLUMNS),
    )


def _refusals_table(rows: Sequence[AgencyFigures], total: AgencyFigures) -> str:
    if not total.refused:
        return '<p id="refusals">Không có văn bản nào bị từ chối (no refusals).</p>'
    return _table(
        "refusals",
        ((r.vi, r.en) for r in REASONS),
        [*(r for r in rows if r.refused), total],
        lambda row: "".join(
            _cell(f"refused_{r.key}", count(row.refusals.get(r.key, 0)), row) for r in REASONS
        ),
    )


def _tile(column: Column, total: AgencyFigures) -> str:
    return (
        f'<div class="tile"><div class="value" data-agency="" data-key="{column.key}">'
        f"{escape(column.text(total))}</div>"
        f'<div class="name">{escape(column.vi)} ({escape(column.en)})</div></div>'
    )


def _node_names(report: Report, names: Mapping[str, str]) -> str:
    return (
        "; ".join(f"{names[n]} ({n})" if names.get(n) else n for n in report.nodes)
        or "không có (none)"
    )


def _attention_table(items: Sequence[Attention], places: Mapping[str, Place]) -> str:
    if not items:
        return '<p id="attention">Không có cơ quan nào cần chú ý (no agency needs attention).</p>'
    rows = []
    for item in items[:ATTENTION_ROWS]:
        row = item.row
        place = places.get(row.agency)
        region = f"<td>{escape(place.region_name)}</td>" if place else "<td></td>"
        reasons = escape("; ".join(item.reasons))
        rows.append(
            f"<tr>{_agency_cell(row)}{region}<td>{reasons}</td>"
            f"{_cell(SENT.key, SENT.text(row), row)}"
            f"{_cell(SAME_DAY_SHARE.key, SAME_DAY_SHARE.text(row), row)}"
            f"{_cell(REFUSED.key, REFUSED.text(row), row)}</tr>"
        )
    more = len(items) - ATTENTION_ROWS
    note = (
        f'<p class="meta">… và {more} cơ quan khác (and {more} more): xem tệp CSV (see the'
        " CSV).</p>"
        if more > 0
        else ""
    )
    head = "".join(
        f"<th>{escape(vi)}<small>({escape(en)})</small></th>"
        for vi, en in (
            ("Cơ quan", "agency"),
            ("Tỉnh", "province"),
            ("Lý do", "why"),
            (SENT.vi, SENT.en),
            (SAME_DAY_SHARE.vi, SAME_DAY_SHARE.en),
            (REFUSED.vi, REFUSED.en),
        )
    )
    return (
        f'<table id="attention"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table>{note}"
    )


def _per_agency(report: Report, total: AgencyFigures) -> tuple[str, str, str, str]:
    """The figures table, the refusals table and the two charts, one line or bar per agency."""
    return (
        "<h2>Số liệu theo cơ quan (figures per agency)</h2>"
        + _figures_table(report.agencies, total),
        _refusals_table(report.agencies, total),
        charts.sent_received(report),
        charts.same_day(report),
    )


def _per_region(
    report: Report, total: AgencyFigures, places: Mapping[str, Place]
) -> tuple[str, str, str, str]:
    """The same, one line per province (and the central bodies), the charts by tier too."""
    regions = groups.by_region(report, places)
    tiers = groups.by_region_and_tier(report, places)
    count = len(report.agencies)
    return (
        "<h2>Số liệu theo tỉnh (figures per province)</h2>"
        f'<p class="meta">{count} cơ quan (agencies); số liệu từng cơ quan trong tệp CSV'
        " (per-agency figures: <code>lienthong report --format csv</code>).</p>"
        + _figures_table(regions, total),
        _refusals_table(regions, total),
        charts.sent_received_by_region(regions, tiers),
        charts.same_day_by_region(regions, tiers),
    )


def to_html(
    report: Report,
    names: Mapping[str, str],
    generated_at: float,
    places: Mapping[str, Place] | None = None,
) -> str:
    """The page of ``report``; ``names`` names the nodes' agencies, ``generated_at`` (seconds
    since the epoch) is printed as when the page was made. With ``places`` (from
    :func:`~lienthong.report.groups.places`) and more than :data:`AGENCY_ROWS` agencies, the
    tables and charts have one line per province instead of one per agency."""
    places = places or {}
    total = replace(report.total, name=TOTAL_NAME)
    if places and len(report.agencies) > AGENCY_ROWS:
        figures, refusals, chart_sent, chart_same_day = _per_region(report, total, places)
    else:
        figures, refusals, chart_sent, chart_same_day = _per_agency(report, total)
    attention = _attention_table(groups.needing_attention(report.agencies), places)
    made = dt.datetime.fromtimestamp(generated_at, VIETNAM).strftime("%H:%M %d/%m/%Y")
    tiles = "".join(_tile(c, total) for c in (SENT, RECEIVED, SIGNED_SHARE, SAME_DAY_SHARE))
    notes = "".join(f"<dt>{escape(t)}</dt><dd>{escape(d)}</dd>" for t, d in NOTES)
    period = period_text(report.period)
    return f"""<!DOCTYPE html>
<html lang="vi">
<head>
<meta charset="utf-8">
<title>{escape(TITLE)} {escape(period)}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>{escape(TITLE)} <small>({escape(TITLE_EN)})</small></h1>
<p class="meta">Kỳ báo cáo (period): <strong id="period">{escape(period)}</strong></p>
<p class="meta">Nút (node): <strong id="nodes">{escape(_node_names(report, names))}</strong></p>
<p class="meta">Lập lúc (made at): {escape(made)}</p>
<div class="tiles">{tiles}</div>
<h2>Cơ quan cần chú ý (agencies that need attention)</h2>
{attention}
{figures}
<h2>Văn bản bị từ chối theo lý do (refusals by reason)</h2>
{refusals}
<h2>Văn bản gửi và nhận (documents sent and received)</h2>
<figure id="chart-sent-received">{chart_sent}</figure>
<h2>Xác nhận trong ngày (same-day confirmation)</h2>
<figure id="chart-same-day">{chart_same_day}</figure>
<h2>Thời gian đến trạng thái 01 (time to status 01)</h2>
<figure id="chart-time-to-01">{charts.time_to_01(report)}</figure>
<h2>Cách tính (how the figures are counted)</h2>
<dl class="notes">{notes}</dl>
</body>
</html>
"""
