"""What the status page shows, read from a running node: links, queues, documents, dead letters.

:func:`take_snapshot` reads the store and the links once; the page, its JSON and the tests
all look at the same :class:`Snapshot`. Recent documents are the document packages the node
has seen lately (:attr:`Metrics.recent`), each read back from the store with its receipts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from lienthong.dirholder import DirectoryHolder
from lienthong.store import Store, UnknownId
from lienthong.store.model import DeadLetter, OldestWaiting, PackageRecord, Receipt
from lienthong.transport.link import Link

__all__ = ["DocumentRow", "LinkRow", "QueueRow", "Snapshot", "take_snapshot"]

RECENT_SHOWN = 20
"""How many recent documents the page lists."""

DEAD_SHOWN = 100
"""How many dead letters the page lists (the count covers them all)."""


@dataclass(frozen=True, slots=True)
class LinkRow:
    """One broker link and its state."""

    name: str
    broker: str
    state: str
    since: float
    last_error: str | None
    connects: int


@dataclass(frozen=True, slots=True)
class QueueRow:
    """Transfers per state for one next hop."""

    next_hop: str
    queued: int
    in_flight: int
    dead: int
    acked: int
    neighbour: bool = True
    """False for a hop the directory in force no longer makes a neighbour (listed while it
    still has transfers)."""

    @property
    def idle(self) -> bool:
        """A neighbour with nothing queued, in flight or dead."""
        return self.neighbour and not (self.queued or self.in_flight or self.dead)


@dataclass(frozen=True, slots=True)
class DocumentRow:
    """A document package, every receipt this node holds about it, and its deviations from
    QCVN 102 (``PATH: MESSAGE [kind]``) when this run accepted it with any."""

    record: PackageRecord
    receipts: tuple[Receipt, ...]
    deviations: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The node's state as the status page shows it, at ``at`` (seconds since the epoch)."""

    node: str
    at: float
    links: tuple[LinkRow, ...]
    queues: tuple[QueueRow, ...]
    oldest_waiting: OldestWaiting | None
    packages: Mapping[str, int]
    intake_blocked: str | None
    documents: tuple[DocumentRow, ...]
    dead_letters: tuple[DeadLetter, ...]
    dead_total: int
    directory: str = ""
    """The directory version in force and its expiry, in words."""
    directory_ok: bool = True
    """False once that version has expired."""

    @property
    def links_up(self) -> int:
        """How many links are up."""
        return sum(1 for link in self.links if link.state == "up")

    @property
    def waiting(self) -> int:
        """Transfers queued or in flight, all hops together."""
        return sum(q.queued + q.in_flight for q in self.queues)

    def as_json(self) -> dict[str, Any]:
        """Plain JSON values (dataclasses as objects, tuples as arrays)."""
        return asdict(self)


def _link_row(name: str, link: Link) -> LinkRow:
    return LinkRow(
        name,
        link.where,
        link.state,
        link.since,
        link.last_error,
        link.connects,
    )


def _recent_ids(recent: Iterable[str], limit: int) -> list[str]:
    """The last ``limit`` distinct ids of ``recent``, newest first."""
    out: list[str] = []
    for package_id in reversed(list(recent)):
        if package_id not in out:
            out.append(package_id)
            if len(out) == limit:
                break
    return out


async def _documents(
    store: Store, package_ids: Iterable[str], deviations: Mapping[str, tuple[str, ...]]
) -> tuple[DocumentRow, ...]:
    rows = []
    for package_id in package_ids:
        try:
            record = await store.get_package(package_id)
        except UnknownId:
            continue
        receipts = await store.receipts(record.meta.document_id)
        rows.append(DocumentRow(record, tuple(receipts), deviations.get(package_id, ())))
    return tuple(rows)


async def take_snapshot(
    *,
    node: str,
    store: Store,
    links: Mapping[str, Link],
    hops: Iterable[str],
    recent: Iterable[str],
    now: float,
    deviations: Mapping[str, tuple[str, ...]] | None = None,
    directory: DirectoryHolder | None = None,
) -> Snapshot:
    """Read the node's links and store once; ``hops`` are the neighbours it sends to (listed
    even with nothing queued; a former neighbour is listed while it has transfers waiting),
    ``recent`` the package ids of recent documents, newest last, ``deviations`` those of
    recent packages by package id (:attr:`Metrics.deviations_of`),
    ``directory`` the holder whose expiry the page shows."""
    summary = await store.queue_summary(now)
    dead = await store.dead_letters()
    neighbours = set(hops)
    queues = tuple(
        QueueRow(
            hop,
            counts.get("queued", 0),
            counts.get("in_flight", 0),
            counts.get("dead", 0),
            counts.get("acked", 0),
            hop in neighbours,
        )
        for hop in sorted(neighbours | set(summary.per_hop))
        for counts in (summary.per_hop.get(hop, {}),)
        if hop in neighbours or any(counts.get(s, 0) for s in ("queued", "in_flight", "dead"))
    )
    return Snapshot(
        node=node,
        at=now,
        links=tuple(_link_row(name, link) for name, link in links.items()),
        queues=queues,
        oldest_waiting=summary.oldest_waiting,
        packages=dict(summary.packages),
        intake_blocked=store.intake_blocked,
        documents=await _documents(store, _recent_ids(recent, RECENT_SHOWN), deviations or {}),
        dead_letters=tuple(sorted(dead, key=lambda d: d.since, reverse=True)[:DEAD_SHOWN]),
        dead_total=len(dead),
        directory=directory.expiry(now).message if directory else "",
        directory_ok=directory.expiry(now).ok if directory else True,
    )
