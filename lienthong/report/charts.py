"""The report's charts, drawn server-side with matplotlib (Agg) as SVG text to inline.

Each function takes a :class:`~lienthong.report.figures.Report` and returns one ``<svg>``
element. Text is drawn as outlines (``svg.fonttype = path``) in DejaVu Sans, which has every
Vietnamese letter, so the page looks the same on any machine without fonts of its own. No
pyplot: each chart is its own :class:`~matplotlib.figure.Figure`, so nothing global is kept.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import matplotlib as mpl
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from lienthong.report.figures import AgencyFigures, Report
from lienthong.report.groups import TIERS
from lienthong.report.labels import duration, percent

SENT_COLOUR = "#1f5fa8"
RECEIVED_COLOUR = "#e08a1e"
SHARE_COLOUR = "#2e8b57"
TARGET_COLOUR = "#c62828"
PENDING_COLOUR = "#9e9e9e"

TIME_BINS: tuple[tuple[float, str], ...] = (
    (15 * 60, "dưới 15 phút"),
    (3600, "15–60 phút"),
    (4 * 3600, "1–4 giờ"),
    (24 * 3600, "4–24 giờ"),
    (3 * 86400, "1–3 ngày"),
    (float("inf"), "trên 3 ngày"),
)
"""Upper bounds (seconds, excluded) and names of the time-to-01 classes, shortest first."""
NOT_CONFIRMED = "chưa xác nhận\n(not confirmed)"


@contextmanager
def _figure(width: float, height: float) -> Iterator[tuple[Figure, Axes]]:
    with mpl.rc_context(
        {
            "font.family": "DejaVu Sans",
            "font.size": 10,
            "svg.fonttype": "path",
            "axes.spines.top": False,
            "axes.spines.right": False,
        }
    ):
        figure = Figure(figsize=(width, height), layout="constrained")
        FigureCanvasAgg(figure)
        yield figure, figure.subplots()


def _svg(figure: Figure) -> str:
    out = io.StringIO()
    figure.savefig(out, format="svg", metadata={"Date": None})
    text = out.getvalue()
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: it goes inside HTML


def _label(row: AgencyFigures, width: int = 30) -> str:
    # A "$" would start matplotlib's math mode; agency names are plain text.
    return textwrap.fill(row.name or row.agency, width).replace("$", r"\$")


def _height(rows: Sequence[AgencyFigures]) -> float:
    return 1.6 + 0.62 * max(1, len(rows))


def sent_received(report: Report) -> str:
    """Horizontal bars: documents sent and received per agency."""
    rows = report.agencies
    with _figure(9, _height(rows)) as (figure, ax):
        ys = range(len(rows))
        sent = ax.barh(
            [y - 0.2 for y in ys],
            [r.sent for r in rows],
            0.4,
            color=SENT_COLOUR,
            label="Gửi (sent)",
        )
        received = ax.barh(
            [y + 0.2 for y in ys],
            [r.received for r in rows],
            0.4,
            color=RECEIVED_COLOUR,
            label="Nhận (received)",
        )
        ax.bar_label(sent, padding=3)
        ax.bar_label(received, padding=3)
        ax.set_yticks(list(ys), [_label(r) for r in rows])
        ax.invert_yaxis()
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Số văn bản (documents)")
        ax.set_title("Văn bản gửi và nhận theo cơ quan (documents sent and received)")
        figure.legend(loc="outside lower center", ncols=2)
        ax.margins(x=0.12)
        return _svg(figure)


def same_day(report: Report) -> str:
    """Horizontal bars: share of the documents sent confirmed the same day, with 100 % target."""
    rows = report.agencies
    with _figure(9, _height(rows)) as (figure, ax):
        ys = list(range(len(rows)))
        shares = [r.same_day_share for r in rows]
        bars = ax.barh(ys, [100 * (s or 0) for s in shares], 0.6, color=SHARE_COLOUR)
        ax.bar_label(
            bars,
            labels=[percent(s) if s is not None else "không gửi (none sent)" for s in shares],
            padding=3,
        )
        ax.axvline(100, color=TARGET_COLOUR, linestyle="--", linewidth=1.5)
        ax.text(100, -0.75, "mục tiêu 100 % (target)", color=TARGET_COLOUR, ha="right", va="bottom")
        ax.set_yticks(ys, [_label(r) for r in rows])
        ax.set_ylim(len(rows) - 0.5, -1.1)
        ax.set_xlim(0, 125)
        ax.set_xticks([0, 25, 50, 75, 100], ["0 %", "25 %", "50 %", "75 %", "100 %"])
        ax.set_xlabel("Tỷ lệ văn bản gửi được xác nhận (01) trong ngày (same-day confirmation)")
        ax.set_title("Xác nhận trong ngày theo cơ quan (confirmed the same day)")
        return _svg(figure)


def time_classes(times: Sequence[float]) -> list[int]:
    """How many of ``times`` (seconds) fall in each class of :data:`TIME_BINS`."""
    counts = [0] * len(TIME_BINS)
    for t in times:
        counts[next(i for i, (upper, _) in enumerate(TIME_BINS) if t < upper)] += 1
    return counts


def time_to_01(report: Report) -> str:
    """Bars: how long the documents sent waited for status 01, and how many still wait."""
    total = report.total
    counts = [*time_classes(total.times_to_01), total.sent - total.confirmed]
    names = [name for _, name in TIME_BINS] + [NOT_CONFIRMED]
    colours = [SENT_COLOUR] * len(TIME_BINS) + [PENDING_COLOUR]
    with _figure(9, 3.8) as (figure, ax):
        bars = ax.bar(range(len(counts)), counts, 0.65, color=colours)
        ax.bar_label(bars, padding=2)
        ax.set_xticks(range(len(counts)), names)
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("Số văn bản (documents)")
        ax.margins(y=0.15)
        ax.set_xlabel("Thời gian từ khi gửi đến khi nơi nhận báo 01 (time to status 01)")
        ax.set_title(
            f"Trung vị (median) {duration(total.median_to_01)};"
            f" 95 % văn bản trong vòng (within) {duration(total.p95_to_01)}"
        )
        return _svg(figure)


SENT_SHADES = ("#1f5fa8", "#4f86c6", "#8fb3e0", "#c9dcf2")
RECEIVED_SHADES = ("#c46f0a", "#e08a1e", "#efb161", "#f7d7a8")
"""Tier 1 to 4, darkest first, for the bars stacked by tier."""


def _region_height(count: int) -> float:
    return 1.8 + 0.34 * max(1, count)


def sent_received_by_region(
    regions: Sequence[AgencyFigures], tiers: Mapping[tuple[str, int], AgencyFigures]
) -> str:
    """Horizontal bars per region (a province, the central bodies): documents sent and
    received, each bar stacked by tier; ``tiers`` holds the figures per (region, tier)."""
    levels = sorted({tier for _, tier in tiers})
    with _figure(9, _region_height(len(regions))) as (figure, ax):
        ys = list(range(len(regions)))
        for kind, offset, shades, label in (
            ("sent", -0.2, SENT_SHADES, "Gửi (sent)"),
            ("received", 0.2, RECEIVED_SHADES, "Nhận (received)"),
        ):
            left = [0] * len(regions)
            for tier in levels:
                values = [getattr(tiers.get((r.agency, tier)), kind, 0) for r in regions]
                ax.barh(
                    [y + offset for y in ys],
                    values,
                    0.4,
                    left=left,
                    color=shades[tier - 1],
                    label=f"{label}, {TIERS[tier]}",
                )
                left = [a + b for a, b in zip(left, values, strict=True)]
            for y, total in zip(ys, left, strict=True):
                ax.text(total, y + offset, f" {total}", va="center", fontsize=8)
        ax.set_yticks(ys, [_label(r, 40) for r in regions], fontsize=8)
        ax.set_ylim(len(regions) - 0.5, -0.7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("Số văn bản (documents)")
        ax.set_title("Văn bản gửi và nhận theo tỉnh và cấp (sent and received by province, tier)")
        figure.legend(loc="outside lower center", ncols=2, fontsize=8)
        ax.margins(x=0.1)
        return _svg(figure)


def same_day_by_region(
    regions: Sequence[AgencyFigures], tiers: Mapping[tuple[str, int], AgencyFigures]
) -> str:
    """A grid, regions down and tiers across: the share of the documents sent confirmed the
    same day in each cell, coloured from red (0 %) to green (100 %), grey where none were
    sent."""
    levels = sorted({tier for _, tier in tiers}) or [1]
    with _figure(9, _region_height(len(regions))) as (figure, ax):
        cmap = mpl.colormaps["RdYlGn"]
        for y, region in enumerate(regions):
            for x, tier in enumerate(levels):
                share = getattr(tiers.get((region.agency, tier)), "same_day_share", None)
                colour = PENDING_COLOUR if share is None else cmap(share)
                ax.add_patch(Rectangle((x, y), 1, 1, color=colour, ec="white"))
                text = "—" if share is None else percent(share)
                ax.text(x + 0.5, y + 0.5, text, ha="center", va="center", fontsize=8)
        ax.set_xlim(0, len(levels))
        ax.set_ylim(len(regions), 0)
        ax.set_xticks([x + 0.5 for x in range(len(levels))], [TIERS[t] for t in levels])
        ax.xaxis.tick_top()
        ax.set_yticks([y + 0.5 for y in range(len(regions))], [_label(r, 40) for r in regions])
        ax.tick_params(axis="y", labelsize=8)
        ax.tick_params(length=0)
        for side in ("left", "bottom"):
            ax.spines[side].set_visible(False)
        ax.set_title(
            "Tỷ lệ xác nhận (01) trong ngày theo tỉnh và cấp; mục tiêu 100 %"
            " (same-day confirmation by province and tier; target 100 %)",
            fontsize=9,
        )
        return _svg(figure)
