"""The report as CSV: one row per agency, stable column names, raw numbers (pure).

Columns: ``period_from``, ``period_to`` (ISO dates, so months can be stacked in one sheet),
``agency``, ``name``, then every figure of :data:`~lienthong.report.labels.CSV_COLUMNS` and
``refused_<reason>`` for each label of :mod:`lienthong.report.reasons`. Counts are integers,
shares decimals from 0 to 1 (four places), times whole seconds; a figure without a value (a
share of nothing, a time never measured) is left empty.
"""

from __future__ import annotations

import csv
import io

from lienthong.report.figures import AgencyFigures, Report
from lienthong.report.labels import CSV_COLUMNS, Column
from lienthong.report.reasons import REASONS

HEADER: tuple[str, ...] = (
    "period_from",
    "period_to",
    "agency",
    "name",
    *(c.key for c in CSV_COLUMNS),
    *(f"refused_{label.key}" for label in REASONS),
)
"""The CSV header; its names never change meaning."""


def _raw(column: Column, row: AgencyFigures) -> str:
    value = column.value(row)
    if value is None:
        return ""
    if column.kind == "share":
        return f"{value:.4f}"
    return str(round(value))


def to_csv(report: Report) -> str:
    """The report as CSV text (RFC 4180, ``\\r\\n`` line ends), header first."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(HEADER)
    first, last = report.period.first.isoformat(), report.period.last.isoformat()
    for row in report.agencies:
        writer.writerow(
            [
                first,
                last,
                row.agency,
                row.name,
                *(_raw(c, row) for c in CSV_COLUMNS),
                *(str(row.refusals.get(label.key, 0)) for label in REASONS),
            ]
        )
    return out.getvalue()
