"""The report's columns and how its numbers are written for people (pure).

The same column list makes the CSV (stable ``key`` names, raw numbers) and the HTML table
(Vietnamese names with the English in parentheses, numbers written the Vietnamese way:
decimal comma, thousands dot, durations in days, hours and minutes).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from lienthong.report.figures import AgencyFigures, Period

Kind = Literal["count", "share", "duration"]
NONE = "—"
"""What a figure without a value shows (a share of nothing, a time never measured)."""


@dataclass(frozen=True, slots=True)
class Column:
    """One figure of an agency's row: its CSV name, its names for people, its value."""

    key: str
    vi: str
    en: str
    kind: Kind
    value: Callable[[AgencyFigures], float | None]

    def text(self, row: AgencyFigures) -> str:
        """The value written for people."""
        return FORMATS[self.kind](self.value(row))


def _col(key: str, vi: str, en: str, kind: Kind, attribute: str = "") -> Column:
    """A column showing the attribute ``attribute`` (default: ``key``) of a row."""

    def value(row: AgencyFigures) -> float | None:
        v: float | None = getattr(row, attribute or key)
        return v

    return Column(key, vi, en, kind, value)


SENT = _col("sent", "Văn bản gửi", "sent", "count")
SIGNED = _col("sent_signed", "Đã ký số", "signed", "count")
SIGNED_SHARE = _col("signed_share", "Tỷ lệ ký số", "signed", "share")
RECEIVED = _col("received", "Văn bản nhận", "received", "count")
VERIFIED = _col("received_verified", "Đã xác thực", "verified", "count")
QUARANTINED = _col("received_quarantined", "Bị cách ly", "quarantined", "count")
VERIFIED_SHARE = _col("verified_share", "Tỷ lệ xác thực", "verified", "share")
CONFIRMED = _col("confirmed", "Đã xác nhận (01)", "confirmed", "count")
SAME_DAY = _col("confirmed_same_day", "Xác nhận trong ngày", "same day", "count")
SAME_DAY_SHARE = _col("same_day_share", "Tỷ lệ xác nhận trong ngày", "same-day share", "share")
MEDIAN = _col("median_to_01_s", "Thời gian đến 01, trung vị", "median", "duration", "median_to_01")
P95 = _col("p95_to_01_s", "Thời gian đến 01, 95 %", "95th percentile", "duration", "p95_to_01")
REFUSED = _col("refused", "Bị từ chối (02)", "refused", "count")

CSV_COLUMNS: tuple[Column, ...] = (
    SENT,
    SIGNED,
    SIGNED_SHARE,
    RECEIVED,
    VERIFIED,
    QUARANTINED,
    VERIFIED_SHARE,
    CONFIRMED,
    SAME_DAY,
    SAME_DAY_SHARE,
    MEDIAN,
    P95,
    REFUSED,
)
"""Every figure, in CSV order (refusals by reason follow)."""

TABLE_COLUMNS: tuple[Column, ...] = (
    SENT,
    SIGNED_SHARE,
    RECEIVED,
    VERIFIED_SHARE,
    QUARANTINED,
    MEDIAN,
    P95,
    SAME_DAY_SHARE,
    REFUSED,
)
"""The figures of the HTML table, the shares standing for their counts."""


def count(value: float | None) -> str:
    """``1234`` -> ``1.234``."""
    return NONE if value is None else f"{round(value):,}".replace(",", ".")


def percent(value: float | None) -> str:
    """A share 0..1 as a percentage with at most one decimal: ``1/3`` -> ``33,3 %``."""
    if value is None:
        return NONE
    text = f"{value * 100:.1f}".removesuffix(".0").replace(".", ",")
    return f"{text} %"


def duration(seconds: float | None) -> str:
    """Seconds in words: ``45 giây``, ``12 phút``, ``2 giờ 5 phút``, ``1 ngày 3 giờ``."""
    if seconds is None:
        return NONE
    minutes = round(seconds / 60)
    if seconds < 60:
        return f"{round(seconds)} giây"
    if minutes < 60:
        return f"{minutes} phút"
    if minutes < 24 * 60:
        hours, rest = divmod(minutes, 60)
        return f"{hours} giờ" + (f" {rest} phút" if rest else "")
    hours = round(seconds / 3600)
    days, rest = divmod(hours, 24)
    return f"{days} ngày" + (f" {rest} giờ" if rest else "")


FORMATS: dict[Kind, Callable[[float | None], str]] = {
    "count": count,
    "share": percent,
    "duration": duration,
}


def day(value: dt.date) -> str:
    """``dd/mm/yyyy``, as Vietnamese documents write dates."""
    return value.strftime("%d/%m/%Y")


def period_text(period: Period) -> str:
    """``01/10/2026 – 31/10/2026`` (one date for a one-day period)."""
    if period.first == period.last:
        return day(period.first)
    return f"{day(period.first)} – {day(period.last)}"
