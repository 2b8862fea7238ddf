"""The figures of the monthly report, computed from what the nodes recorded (pure).

Input is what each node's store holds (:class:`NodeRecords`); nothing here reads a store,
a file or a clock. The figures, per agency served by the nodes:

- **sent**: document packages (edoc) submitted by the agency at its node during the period
  (``created_at``, Vietnam local days), counted once per DocumentId; **signed**: those whose
  stored bytes carry a signature.
- **received**: documents for the agency that reached its node during the period, once per
  DocumentId: **verified** ones were delivered to its inbox (signature and content checked),
  **quarantined** ones were refused there (and not delivered by another copy).
- **time to status 01**: for a document sent in the period, from its submission to the
  status 01 of its last recipient, as the sending node recorded them (one clock, so no skew
  between machines). A document is **confirmed** when every recipient returned a 01, and
  **confirmed the same day** when the last 01 came on the Vietnam calendar day of the
  submission. The median is the usual one (mean of the two middle values for an even count);
  the 95th percentile is the nearest-rank one, a time some document really took.
- **refusals**: status 02 received about the documents sent in the period, one per refusing
  agency, grouped by :mod:`lienthong.report.reasons`.
"""

from __future__ import annotations

import datetime as dt
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from lienthong.errors import LienthongError
from lienthong.receipts import ARRIVED, REFUSED, VIETNAM
from lienthong.report.reasons import REASONS, reason_of
from lienthong.store.lifecycle import PackageState
from lienthong.store.model import InboxEntry, PackageRecord, Receipt


class PeriodError(LienthongError):
    """A report period that cannot be: its last day before its first."""


@dataclass(frozen=True, slots=True)
class Period:
    """The days ``first`` to ``last``, both included, in Vietnam local time."""

    first: dt.date
    last: dt.date

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise PeriodError(
                f"the period ends ({self.last.isoformat()}) before it starts"
                f" ({self.first.isoformat()})"
            )

    @property
    def start_at(self) -> float:
        """The first instant of the period, in seconds since the epoch."""
        return dt.datetime.combine(self.first, dt.time(), VIETNAM).timestamp()

    @property
    def end_at(self) -> float:
        """The first instant after the period, in seconds since the epoch."""
        after = self.last + dt.timedelta(days=1)
        return dt.datetime.combine(after, dt.time(), VIETNAM).timestamp()

    def __contains__(self, at: object) -> bool:
        return isinstance(at, int | float) and self.start_at <= at < self.end_at


def local_day(at: float) -> dt.date:
    """The Vietnam calendar day of the instant ``at``."""
    return dt.datetime.fromtimestamp(at, VIETNAM).date()


@dataclass(frozen=True, slots=True)
class NodeRecords:
    """What one node's store holds that the report needs.

    ``served`` are the agencies the node serves (from the directory), in the order reports
    list them; ``signed`` the ids of the packages whose stored bytes carry a signature;
    ``receipts`` the status receipts about the documents sent from this node.
    """

    node: str
    served: tuple[str, ...]
    packages: tuple[PackageRecord, ...] = ()
    receipts: tuple[Receipt, ...] = ()
    inbox: tuple[InboxEntry, ...] = ()
    signed: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class AgencyFigures:
    """The figures of one agency (or of all of them: the total, ``agency == ""``)."""

    agency: str
    name: str
    sent: int = 0
    sent_signed: int = 0
    received_verified: int = 0
    received_quarantined: int = 0
    confirmed: int = 0
    confirmed_same_day: int = 0
    times_to_01: tuple[float, ...] = ()
    refusals: Mapping[str, int] = field(default_factory=dict)

    @property
    def received(self) -> int:
        """Documents received: verified plus quarantined."""
        return self.received_verified + self.received_quarantined

    @property
    def refused(self) -> int:
        """Status 02 received, every reason together."""
        return sum(self.refusals.values())

    @property
    def signed_share(self) -> float | None:
        """Share of the documents sent that were signed; None when none were sent."""
        return _share(self.sent_signed, self.sent)

    @property
    def verified_share(self) -> float | None:
        """Share of the documents received that were verified; None when none came."""
        return _share(self.received_verified, self.received)

    @property
    def same_day_share(self) -> float | None:
        """Share of the documents sent confirmed the same day; None when none were sent."""
        return _share(self.confirmed_same_day, self.sent)

    @property
    def median_to_01(self) -> float | None:
        """Median seconds to status 01 over the confirmed documents; None if there are none."""
        return statistics.median(self.times_to_01) if self.times_to_01 else None

    @property
    def p95_to_01(self) -> float | None:
        """95th percentile (nearest rank) of the seconds to status 01; None if none."""
        return percentile(self.times_to_01, 95)


@dataclass(frozen=True, slots=True)
class Report:
    """The figures of a period: one row per agency, and the total."""

    period: Period
    nodes: tuple[str, ...]
    agencies: tuple[AgencyFigures, ...]
    total: AgencyFigures


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def percentile(values: Sequence[float], p: float) -> float | None:
    """The nearest-rank ``p``-th percentile of ``values`` (None when empty)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(slots=True)
class _Sent:
    at: float
    recipients: tuple[str, ...]
    signed: bool


@dataclass(slots=True)
class _Tally:
    sent: dict[str, _Sent] = field(default_factory=dict)
    delivered: set[str] = field(default_factory=set)
    quarantined: set[str] = field(default_factory=set)


def _is_sent_document(p: PackageRecord) -> bool:
    return p.meta.kind == "edoc" and p.from_peer is None


def _tally_node(records: NodeRecords, period: Period, tallies: dict[str, _Tally]) -> None:
    for p in records.packages:
        if _is_sent_document(p) and p.created_at in period:
            tally = tallies.setdefault(p.meta.sender, _Tally())
            signed = p.package_id in records.signed
            known = tally.sent.get(p.meta.document_id)
            if known is None:
                tally.sent[p.meta.document_id] = _Sent(p.created_at, p.meta.recipients, signed)
            else:  # another package of the same document: count it once, from its first
                known.at = min(known.at, p.created_at)
                known.signed = known.signed or signed
        elif (
            p.meta.kind == "edoc"
            and p.from_peer is not None
            and p.state == PackageState.QUARANTINED
            and p.updated_at in period
        ):
            # Only the recipients served here: the others were further on, not refused here.
            for agency in set(p.meta.recipients) & set(records.served):
                tallies.setdefault(agency, _Tally()).quarantined.add(p.meta.document_id)
    for e in records.inbox:
        if e.kind == "edoc" and e.added_at in period:
            tallies.setdefault(e.recipient, _Tally()).delivered.add(e.document_id)


def _confirmation(sent: _Sent, statuses: Iterable[Receipt]) -> float | None:
    """When the last recipient's first status 01 came, or None if one has not come."""
    first: dict[str, float] = {}
    for r in statuses:
        if r.code == ARRIVED and r.by in sent.recipients:
            first[r.by] = min(r.at, first.get(r.by, r.at))
    if not sent.recipients or set(first) != set(sent.recipients):
        return None
    return max(first.values())


def _refusals(statuses: Iterable[Receipt]) -> list[Receipt]:
    """The status 02 about one document, the first from each refusing agency."""
    first: dict[str, Receipt] = {}
    for r in sorted(statuses, key=lambda r: r.at):
        if r.code == REFUSED:
            first.setdefault(r.by, r)
    return list(first.values())


def _figures(
    agency: str, name: str, tally: _Tally, statuses: Mapping[str, set[Receipt]]
) -> AgencyFigures:
    times: list[float] = []
    same_day = 0
    refusals = dict.fromkeys((r.key for r in REASONS), 0)
    for document_id, sent in tally.sent.items():
        about = statuses.get(document_id, set())
        confirmed_at = _confirmation(sent, about)
        if confirmed_at is not None:
            # The 01 is stamped by the sending node's own clock, so it can only come before
            # the submission if that clock was set back: count it as immediate.
            times.append(max(0.0, confirmed_at - sent.at))
            same_day += local_day(confirmed_at) == local_day(sent.at)
        for r in _refusals(about):
            refusals[reason_of(r.detail).key] += 1
    return AgencyFigures(
        agency=agency,
        name=name,
        sent=len(tally.sent),
        sent_signed=sum(s.signed for s in tally.sent.values()),
        received_verified=len(tally.delivered),
        received_quarantined=len(tally.quarantined - tally.delivered),
        confirmed=len(times),
        confirmed_same_day=same_day,
        times_to_01=tuple(sorted(times)),
        refusals=refusals,
    )


def total_of(rows: Sequence[AgencyFigures], name: str = "") -> AgencyFigures:
    """Every row added up (times pooled), as one row with ``agency == ""``."""
    return AgencyFigures(
        agency="",
        name=name,
        sent=sum(r.sent for r in rows),
        sent_signed=sum(r.sent_signed for r in rows),
        received_verified=sum(r.received_verified for r in rows),
        received_quarantined=sum(r.received_quarantined for r in rows),
        confirmed=sum(r.confirmed for r in rows),
        confirmed_same_day=sum(r.confirmed_same_day for r in rows),
        times_to_01=tuple(sorted(t for r in rows for t in r.times_to_01)),
        refusals={label.key: sum(r.refusals.get(label.key, 0) for r in rows) for label in REASONS},
    )


def compute(
    period: Period, nodes: Sequence[NodeRecords], names: Mapping[str, str] | None = None
) -> Report:
    """The report of ``period`` from the records of ``nodes`` (one server or province).

    Every agency the nodes serve gets a row, in the order of their ``served`` lists, also
    when it did nothing (a leader must see that too); an agency that is not served there but
    appears in the records (the directory changed since) gets one after them, so no record
    is left out. ``names`` gives the agencies' names (the code stands in for a missing one).
    """
    names = names or {}
    tallies: dict[str, _Tally] = {}
    statuses: dict[str, set[Receipt]] = {}
    for records in nodes:
        _tally_node(records, period, tallies)
        for r in records.receipts:
            if r.level == "status":
                statuses.setdefault(r.document_id, set()).add(r)
    served = list(dict.fromkeys(code for records in nodes for code in records.served))
    order = served + sorted(set(tallies) - set(served))
    rows = tuple(
        _figures(code, names.get(code, code), tallies.get(code, _Tally()), statuses)
        for code in order
    )
    unique_nodes = tuple(dict.fromkeys(records.node for records in nodes))
    return Report(period, unique_nodes, rows, total_of(rows))
