"""The life of one document, from the records of one or more nodes, told as a story.

Each node knows its own part: the packages it stored (the document, and the status packages
about it) with the neighbour each came from, the hop receipts of the neighbours it sent to, the
inbox entries it delivered, and the status packages that reached it. Merged, the views give
every hop of every package; :func:`story` groups them per package (the document first, then
each status with its code) and ends with where the document is now and what is still awaited.

Which package a hop receipt is about is not in the receipt (it names the transfer); a node's
view settles it by direction: the document travels away from its sender, status packages
travel back towards it, so a receipt from the neighbour the document came from is a status
package's. When several status packages went that way, they are matched to the receipts in
the order they were stored. A hop the next node's own view shows (it stored the package, from
this node) is taken from there, exactly.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from lienthong.edxml import StatusPackage, validate
from lienthong.edxml.model import STATUS_CODES
from lienthong.errors import LienthongError
from lienthong.receipts import VIETNAM
from lienthong.store.base import Store
from lienthong.store.lifecycle import PackageState
from lienthong.store.model import InboxEntry, PackageRecord, Receipt

__all__ = ["DOCUMENT", "Event", "NodeView", "collect_view", "format_time", "story", "trace"]

DOCUMENT = "document"
"""The ``package`` of the events about the document itself."""
FINAL_STATUSES = frozenset({"02", "06"})
"""A recipient that sent one of these has finished with the document."""


@dataclass(frozen=True, slots=True)
class NodeView:
    """What one node holds about one document; ``status_codes`` gives the status code of each
    status package it stored, ``deviations`` the deviations from QCVN 102 of each document
    package it keeps (``PATH: MESSAGE [kind]``, checked again from the kept bytes), by
    package id."""

    node: str
    packages: tuple[PackageRecord, ...]
    receipts: tuple[Receipt, ...]
    inbox: tuple[InboxEntry, ...]
    status_codes: Mapping[str, str] = field(default_factory=dict)
    deviations: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a trace: ``what`` happened at ``node`` at ``at`` (seconds since the epoch),
    about ``package``: :data:`DOCUMENT` or ``status CODE from AGENCY``. ``agency`` is the
    agency concerned (the recipient delivered to, the agency reporting a status) and ``code``
    the status code, where they apply."""

    at: float
    node: str
    kind: str
    what: str
    package: str = DOCUMENT
    agency: str = ""
    code: str = ""

    def as_dict(self) -> dict[str, object]:
        """For ``--json``: the fields plus ``time`` in Vietnam local time, ISO 8601."""
        return {**asdict(self), "time": format_time(self.at)}


def format_time(at: float) -> str:
    """``at`` as Vietnam local time, ``yyyy-mm-ddTHH:MM:SS+07:00``."""
    return dt.datetime.fromtimestamp(at, VIETNAM).isoformat(timespec="seconds")


def _status_name(code: str) -> str:
    return STATUS_CODES.get(code, "unknown status")


@dataclass(frozen=True, slots=True)
class _About:
    """The package an event is about: the document, or a status (code, reporting agency)."""

    code: str = ""
    reporter: str = ""

    @property
    def label(self) -> str:
        return f"status {self.code} from {self.reporter}" if self.reporter else DOCUMENT


_DOC = _About()
_UNKNOWN_STATUS = _About("??", "an agency")


def _about(view: NodeView, record: PackageRecord) -> _About:
    if record.meta.kind == "edoc":
        return _DOC
    return _About(view.status_codes.get(record.package_id, "??"), record.meta.sender)


def _event(at: float, node: str, kind: str, what: str, about: _About = _DOC, **more: str) -> Event:
    return Event(at, node, kind, what, about.label, code=about.code, **more)


def _package_events(view: NodeView) -> Iterable[Event]:
    for record in view.packages:
        about = _about(view, record)
        if record.meta.kind == "edoc" and record.from_peer is None:
            yield _event(
                record.created_at,
                view.node,
                "submitted",
                f"submitted, validated and signed by {view.node} for"
                f" {', '.join(record.meta.recipients)}",
            )
        if record.from_peer is not None:
            yield _event(
                record.created_at,
                view.node,
                "hop",
                f"{record.from_peer} -> {view.node}: stored by {view.node}",
                about,
                agency=about.reporter,
            )
        if record.state == "quarantined":
            yield _event(
                record.updated_at,
                view.node,
                "refused",
                f"{record.meta.kind} refused at {view.node}: {record.reason or 'no reason kept'}",
                about,
            )
        if record.state == "expired":
            yield _event(record.updated_at, view.node, "expired", f"expired at {view.node}", about)
        for line in view.deviations.get(record.package_id, ()):
            yield _event(record.created_at, view.node, "deviation", f"{line}, accepted", about)


def _hop_packages(view: NodeView) -> list[_About]:
    """The package each hop receipt of ``view`` is about, in the order of its receipts."""
    hops = sorted((r for r in view.receipts if r.level == "hop"), key=lambda r: r.at)
    edoc = next((p for p in view.packages if p.meta.kind == "edoc"), None)
    towards_sender = edoc.from_peer if edoc is not None else None
    statuses = sorted(
        (p for p in view.packages if p.meta.kind == "status"), key=lambda p: p.created_at
    )
    sent: dict[str, list[PackageRecord]] = {}
    labels: list[_About] = []
    for receipt in hops:
        if edoc is not None and receipt.by != towards_sender:
            labels.append(_DOC)
            continue
        # A status package: the first one stored here, not from that neighbour, not yet
        # matched to a receipt from it.
        done = sent.setdefault(receipt.by, [])
        match = next(
            (
                p
                for p in statuses
                if p.from_peer != receipt.by and p not in done and p.created_at <= receipt.at
            ),
            None,
        )
        if match is None:
            labels.append(_UNKNOWN_STATUS)
            continue
        done.append(match)
        labels.append(_about(view, match))
    return labels


def _receipt_events(view: NodeView, viewed: frozenset[str]) -> Iterable[Event]:
    """``viewed``: the nodes whose own views are merged; a hop to one of them is told by the
    record it keeps, so its receipt here is left out."""
    hops = sorted((r for r in view.receipts if r.level == "hop"), key=lambda r: r.at)
    for r, about in zip(hops, _hop_packages(view), strict=True):
        if r.by not in viewed:
            what = f"{view.node} -> {r.by}: stored by {r.by}"
            yield _event(r.at, view.node, "hop", what, about, agency=about.reporter)
    for r in view.receipts:
        if r.level == "status":
            note = f": {r.detail}" if r.detail else ""
            yield _event(
                r.at,
                view.node,
                "status",
                f"status {r.code} ({_status_name(r.code)}) from {r.by}{note}",
                _About(r.code, r.by),
                agency=r.by,
            )
        elif r.level == "retrieval":
            what = f"{r.code} by the office software of {r.by}"
            yield _event(r.at, view.node, "retrieval", what, agency=r.by)


def _inbox_events(view: NodeView) -> Iterable[Event]:
    for entry in view.inbox:
        if entry.kind == "edoc":
            yield _event(
                entry.added_at,
                view.node,
                "delivered",
                f"delivered to the inbox of {entry.recipient} at {view.node}",
                agency=entry.recipient,
            )


async def collect_view(store: Store, node: str, document_id: str) -> NodeView:
    """What ``store`` (the store of ``node``) holds about ``document_id``: the only function
    here that reads anything."""
    packages = [
        p
        for state in PackageState
        for p in await store.packages(state)
        if p.meta.document_id == document_id
    ]
    codes, deviations = {}, {}
    for p in packages:
        try:
            data = await store.read_package(p.package_id)
        except (LienthongError, OSError):
            continue  # an unreadable package keeps its place without a code or findings
        result = validate(data)
        if isinstance(result.package, StatusPackage):
            codes[p.package_id] = result.package.status_code
        elif result.deviations:
            deviations[p.package_id] = tuple(f"{d} [{d.kind}]" for d in result.deviations)
    inbox = [e for e in await store.inbox_list(pending=False) if e.document_id == document_id]
    receipts = tuple(await store.receipts(document_id))
    return NodeView(node, tuple(packages), receipts, tuple(inbox), codes, deviations)


def trace(views: Sequence[NodeView]) -> list[Event]:
    """Every event the ``views`` know of, oldest first, without repeats; a hop seen both as a
    receipt at the sending node and as a record at the receiving one is told once."""
    viewed = frozenset(v.node for v in views)
    events: list[Event] = []
    for view in views:
        events += _package_events(view)
        events += _receipt_events(view, viewed)
        events += _inbox_events(view)
    unique = list(dict.fromkeys(events))
    return sorted(unique, key=lambda e: e.at)


def _recipients(views: Sequence[NodeView]) -> tuple[str, ...]:
    for view in views:
        for record in view.packages:
            if record.meta.kind == "edoc":
                return record.meta.recipients
    return ()


def story(document_id: str, views: Sequence[NodeView]) -> str:
    """The trace for people: the document's hops, then each status package's, one line per
    event, then where the document is now and what is still awaited."""
    events = trace(views)
    if not events:
        return f"{document_id}: no node here knows this document"
    lines = [f"DocumentId {document_id}"]
    groups: dict[str, list[Event]] = {DOCUMENT: []}
    for e in events:
        groups.setdefault(e.package, []).append(e)
    for group in groups.values():
        if not group:
            continue
        lines.append("")
        lines.append(_heading(group[0]))
        lines += [f"  {format_time(e.at)}  {e.kind:<9}  {e.what}" for e in group]
    lines.append("")
    lines += _now(events, _recipients(views))
    return "\n".join(lines)


def _heading(first: Event) -> str:
    if first.package == DOCUMENT:
        return "The document"
    return f"Status {first.code} ({_status_name(first.code)}) from {first.agency}"


def _now(events: Sequence[Event], recipients: Sequence[str]) -> list[str]:
    """Where the document is for each recipient, and what is awaited from each."""
    statuses: dict[str, list[str]] = {}
    for e in events:
        if e.kind == "status":
            statuses.setdefault(e.agency, []).append(e.code)
    delivered = {e.agency for e in events if e.kind == "delivered"}
    document_hops = [e for e in events if e.kind == "hop" and e.package == DOCUMENT]
    last_stop = document_hops[-1].what.rsplit(" ", 1)[-1] if document_hops else None
    now, awaited = ["Where it is now"], []
    for recipient in recipients or sorted(statuses):
        codes = statuses.get(recipient, [])
        if codes:
            last = codes[-1]
            now.append(f"  {recipient}: delivered; last status {last} ({_status_name(last)})")
            if not FINAL_STATUSES & set(codes):
                awaited.append(
                    f"  from {recipient}: status 06 (completed) or 02 (refused);"
                    " 03 to 05 may come before"
                )
        elif recipient in delivered:
            now.append(f"  {recipient}: delivered, no status has come back yet")
            awaited.append(f"  from {recipient}: status 01 (arrived)")
        else:
            where = f"last stored at {last_stop}" if last_stop else "not sent on yet"
            now.append(f"  {recipient}: not delivered as far as these nodes know; {where}")
            awaited.append(f"  delivery to {recipient}, then its statuses")
    if awaited:
        return [*now, "Still awaited", *awaited]
    return [*now, "Nothing is awaited: every recipient has completed (06) or refused (02)."]
