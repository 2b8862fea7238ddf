"""The monthly report: figures per agency from the nodes' own records, as CSV or HTML.

:mod:`~lienthong.report.figures` computes (pure), :mod:`~lienthong.report.collect` reads a
store, :mod:`~lienthong.report.table` writes the CSV and :mod:`~lienthong.report.page` the
HTML page with its charts (:mod:`~lienthong.report.charts`). The page is not imported here:
it loads matplotlib, which the other commands of ``lienthong`` should not wait for.
"""

from lienthong.report.collect import read_node, served_by
from lienthong.report.figures import (
    AgencyFigures,
    NodeRecords,
    Period,
    PeriodError,
    Report,
    compute,
)
from lienthong.report.table import to_csv

__all__ = [
    "AgencyFigures",
    "NodeRecords",
    "Period",
    "PeriodError",
    "Report",
    "compute",
    "read_node",
    "served_by",
    "to_csv",
]
