"""The life of one document, from the records of one or more nodes.

Each node knows its own part: the package it stored and its state, the hop receipts of the
neighbours it sent to, the inbox entries it delivered, and the status packages that reached it.
A node's view gives the sender's side (submitted, first hop, every status with who sent it and
when); the views of all the nodes on the path, merged, give every hop with its time. Events are
sorted by time, then by the order they were given in.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from lienthong.edxml.model import STATUS_CODES
from lienthong.receipts import VIETNAM
from lienthong.store.base import Store
from lienthong.store.lifecycle import PackageState
from lienthong.store.model import InboxEntry, PackageRecord, Receipt


@dataclass(frozen=True, slots=True)
class NodeView:
    """What one node holds about one document."""

    node: str
    packages: tuple[PackageRecord, ...]
    receipts: tuple[Receipt, ...]
    inbox: tuple[InboxEntry, ...]


@dataclass(frozen=True, slots=True)
class Event:
    """One line of a trace: ``what`` happened at ``node`` at ``at`` (seconds since the epoch)."""

    at: float
    node: str
    kind: str
    what: str

    def as_dict(self) -> dict[str, object]:
        """For ``--json``: the fields plus ``time`` in Vietnam local time, ISO 8601."""
        return {**asdict(self), "time": format_time(self.at)}


def format_time(at: float) -> str:
    """``at`` as Vietnam local time, ``yyyy-mm-ddTHH:MM:SS+07:00``."""
    return dt.datetime.fromtimestamp(at, VIETNAM).isoformat(timespec="seconds")


def _status_name(code: str) -> str:
    return STATUS_CODES.get(code, "unknown status")


def _package_events(view: NodeView) -> Iterable[Event]:
    for record in view.packages:
        if record.meta.kind == "edoc" and record.from_peer is None:
            yield Event(
                record.created_at,
                view.node,
                "submitted",
                f"submitted, validated and signed by {view.node} for"
                f" {', '.join(record.meta.recipients)}",
            )
        if record.state == "quarantined":
            yield Event(
                record.updated_at,
                view.node,
                "refused",
                f"{record.meta.kind} refused at {view.node}: {record.reason or 'no reason kept'}",
            )
        if record.state == "expired":
            yield Event(record.updated_at, view.node, "expired", f"expired at {view.node}")


def _receipt_events(view: NodeView) -> Iterable[Event]:
    for r in view.receipts:
        if r.level == "hop":
            yield Event(r.at, view.node, "hop", f"{view.node} -> {r.by}: stored by {r.by}")
        elif r.level == "status":
            note = f": {r.detail}" if r.detail else ""
            yield Event(
                r.at,
                view.node,
                "status",
                f"status {r.code} ({_status_name(r.code)}) from {r.by}{note}",
            )
        else:
            yield Event(r.at, view.node, "retrieval", f"{r.code} by the office software of {r.by}")


def _inbox_events(view: NodeView) -> Iterable[Event]:
    for entry in view.inbox:
        if entry.kind == "edoc":
            yield Event(
                entry.added_at,
                view.node,
                "delivered",
                f"delivered to the inbox of {entry.recipient} at {view.node}",
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
    inbox = [e for e in await store.inbox_list(pending=False) if e.document_id == document_id]
    return NodeView(node, tuple(packages), tuple(await store.receipts(document_id)), tuple(inbox))


def trace(views: Sequence[NodeView]) -> list[Event]:
    """Every event the ``views`` know of, oldest first, without repeats."""
    events: list[Event] = []
    for view in views:
        events += _package_events(view)
        events += _receipt_events(view)
        events += _inbox_events(view)
    unique = list(dict.fromkeys(events))
    return sorted(unique, key=lambda e: e.at)


def render(document_id: str, events: Sequence[Event]) -> str:
    """The trace as lines for people."""
    if not events:
        return f"{document_id}: no node here knows this document"
    lines = [f"DocumentId {document_id}"]
    lines += [f"  {format_time(e.at)}  {e.kind:<9}  {e.what}" for e in events]
    return "\n".join(lines)
