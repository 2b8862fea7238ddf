"""Reading what the report needs from a node's store: the only part of the report doing I/O.

Everything is read through the :class:`~lienthong.store.base.Store` protocol, so the same code
reads the SQLite store of a running node (WAL lets it read beside the daemon) and the
in-memory one. Only what the period needs is read in full: receipts and package bytes for
the documents sent in it.
"""

from __future__ import annotations

from collections.abc import Sequence

from lienthong.directory import Directory
from lienthong.edxml import parse
from lienthong.errors import LienthongError
from lienthong.report.figures import NodeRecords, Period
from lienthong.store.base import Store
from lienthong.store.lifecycle import PackageState
from lienthong.store.model import PackageRecord


def carries_signature(data: bytes) -> bool:
    """True when the package ``data`` holds a signature (not checked: the node made it)."""
    try:
        return parse(data).signed
    except LienthongError:
        return False  # bytes that cannot be read carry no signature anyone could check


def served_by(directory: Directory, node: str) -> tuple[str, ...]:
    """The agencies ``node`` serves, in the directory's order (the node's own first)."""
    served = [c for c in directory.codes if directory.serving_node(c) == node]
    return tuple(sorted(served, key=lambda c: c != node))


def _wanted(p: PackageRecord, period: Period) -> bool:
    """Documents sent here in the period, and documents refused here (any time, filtered
    later by when they were refused)."""
    if p.meta.kind != "edoc":
        return False
    if p.from_peer is None:
        return p.created_at in period
    return p.state == PackageState.QUARANTINED


async def read_node(store: Store, node: str, served: Sequence[str], period: Period) -> NodeRecords:
    """What ``store`` (the store of ``node``, serving ``served``) holds for ``period``."""
    packages = [p for state in PackageState for p in await store.packages(state)]
    packages = [p for p in packages if _wanted(p, period)]
    sent = [p for p in packages if p.from_peer is None]
    receipts = []
    for document_id in dict.fromkeys(p.meta.document_id for p in sent):
        receipts += [r for r in await store.receipts(document_id) if r.level == "status"]
    signed: set[str] = set()
    for p in sent:
        if carries_signature(await store.read_package(p.package_id)):
            signed.add(p.package_id)
    inbox = [
        e
        for e in await store.inbox_list(pending=False)
        if e.kind == "edoc" and e.added_at in period
    ]
    return NodeRecords(
        node=node,
        served=tuple(served),
        packages=tuple(packages),
        receipts=tuple(receipts),
        inbox=tuple(inbox),
        signed=frozenset(signed),
    )
