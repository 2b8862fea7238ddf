"""The :class:`Store` protocol: what the daemon needs from durable storage.

Every method that changes state returns only after the change is committed, and appends the
change to the hash-chained journal in the same transaction. Commits are durable on disk, except
for the bookkeeping of sending (:meth:`Store.lease_transfer`, :meth:`Store.fail`,
:meth:`Store.ack`), whose loss on power failure only makes a transfer go again. Time is
passed in (``now``, seconds since the epoch) so schedules are tested without sleeping.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

from lienthong.errors import LienthongError
from lienthong.store.journal import JournalReport
from lienthong.store.lifecycle import PackageState
from lienthong.store.model import (
    Conflict,
    DeadLetter,
    Expired,
    FailResult,
    InboxEntry,
    Lease,
    PackageMeta,
    PackageRecord,
    PackageSource,
    QueueSummary,
    Receipt,
    ReceiveResult,
    Reply,
)


class Store(Protocol):
    """Durable packages, transfers, inbox, receipts and journal of one node."""

    @property
    def intake_blocked(self) -> str | None:
        """Why intake is stopped (disk full, database locked), or None while it runs."""
        ...

    async def open(self) -> None:
        """Open (creating or migrating as needed)."""
        ...

    async def close(self) -> None:
        """Finish pending writes and close."""
        ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def resume_intake(self) -> bool:
        """Try the disk and database again; clear :attr:`intake_blocked` if they work.

        An open store also does this by itself every ``store.intake_retry_s`` while intake is
        stopped, so it resumes once the fault clears without anyone asking."""
        ...

    async def put_package(
        self, data: PackageSource, meta: PackageMeta, now: float
    ) -> tuple[str, bool]:
        """Store a package submitted here (signed -> stored): ``(package_id, duplicate)``.

        ``data`` is the bytes, or a file holding them that the store adopts (see
        :data:`PackageSource`): so a large package is never read into memory."""
        ...

    async def receive(
        self,
        transfer_id: str,
        data: PackageSource,
        meta: PackageMeta,
        from_peer: str,
        now: float,
        hops: Mapping[str, Sequence[str]] | None = None,
    ) -> ReceiveResult:
        """Store a package a neighbour sent (received -> stored), deduped by transfer and digest.

        With ``hops`` (a package passing through: no recipient here), a new package is also
        routed (stored -> routed, one queued transfer per next hop with its recipients) in the
        same transaction, so one commit precedes its hop receipt. ``data`` as for
        :meth:`put_package`."""
        ...

    async def read_package(self, package_id: str) -> bytes:
        """The bytes of a stored package."""
        ...

    async def package_file(self, package_id: str) -> Path | None:
        """The file holding a stored package, to read in pieces (it never changes while the
        package is stored), or None when the package is small enough to read whole with
        :meth:`read_package`; :class:`UnknownId` if there is none. The file is checked against
        the package's digest first, as :meth:`read_package` checks what it reads."""
        ...

    async def collect_orphans(self) -> int:
        """Remove package files that no stored package names (left by a crash between
        writing a file and committing its row); how many. Called by the daemon at start,
        while no other process stores packages here."""
        ...

    async def get_package(self, package_id: str) -> PackageRecord:
        """The package's record; :class:`UnknownId` if there is none."""
        ...

    async def packages(self, state: PackageState) -> list[PackageRecord]:
        """Packages in ``state``, oldest first (to resume work after a restart)."""
        ...

    async def set_package_state(
        self, package_id: str, to_state: PackageState, now: float, reason: str | None = None
    ) -> None:
        """Move a package along its life cycle (verified, quarantined, ...)."""
        ...

    async def enqueue(
        self, package_id: str, hops: Mapping[str, Sequence[str]], now: float
    ) -> list[str]:
        """Route the package: one queued transfer per next hop with its recipients; their ids."""
        ...

    async def lease_transfer(self, next_hop: str | None, now: float) -> Lease | None:
        """Take the next due transfer (for ``next_hop``, or any) and count the attempt."""
        ...

    async def extend_lease(self, lease: Lease, now: float) -> float | None:
        """Keep ``lease`` for another ``store.lease_s`` from ``now`` (a long send is not taken
        again while it is still being sent): the new end, or None when the transfer is no
        longer in flight under this lease. Bookkeeping: may be lost on power loss."""
        ...

    async def ack(self, transfer_id: str, sha256: str, now: float, by: str | None = None) -> bool:
        """Record the hop receipt; False if the transfer was already acknowledged.

        ``by`` is the neighbour the receipt came from; a receipt from any other neighbour than
        the transfer's next hop raises :class:`WrongPeer`."""
        ...

    async def ack_many(
        self, receipts: Sequence[tuple[str, str]], now: float, by: str | None = None
    ) -> list[bool | LienthongError]:
        """Record hop receipts ``(transfer_id, sha256)`` from one neighbour in one operation:
        for each, what :meth:`ack` would return, or the error it would raise (the others are
        recorded all the same)."""
        ...

    async def fail(self, lease: Lease, error: str, now: float) -> FailResult:
        """The leased attempt failed: schedule a retry or dead-letter the transfer."""
        ...

    async def dead_letters(self) -> list[DeadLetter]:
        """Dead transfers and expired packages, with their reasons."""
        ...

    async def requeue(self, item_id: str | None, now: float) -> int:
        """Put one dead transfer or expired package back (``None``: all); how many."""
        ...

    async def expire(self, now: float) -> Expired:
        """Dead-letter packages and transfers past their maximum age."""
        ...

    async def inbox_add(self, package_id: str, recipients: Sequence[str], now: float) -> None:
        """Deliver a verified package to the local ``recipients`` (verified -> delivered)."""
        ...

    async def deliver(
        self,
        package_id: str,
        recipients: Sequence[str],
        now: float,
        replies: Sequence[Reply] = (),
        receipt: Receipt | None = None,
    ) -> None:
        """Deliver a checked package to local ``recipients`` (stored or verified -> delivered),
        record ``receipt``, and store each reply made here (signed -> stored, then routed to its
        hops and/or delivered here), all in one commit."""
        ...

    async def inbox_list(
        self, recipient: str | None = None, pending: bool = True
    ) -> list[InboxEntry]:
        """Inbox entries (for one recipient), only those not yet retrieved if ``pending``."""
        ...

    async def inbox_entry(self, entry_id: int) -> InboxEntry | None:
        """The inbox entry ``entry_id`` in any state, or None when there is none."""
        ...

    async def inbox_ack(self, entry_id: int, ok: bool, now: float, detail: str = "") -> None:
        """The office software retrieved the entry (``ok``) or failed to (updateStatus).

        Idempotent once retrieved: acknowledging a retrieved entry again, either way, changes
        nothing and records nothing (office software re-sends calls when a connection drops).
        """
        ...

    async def inbox_revoke(
        self, document_id: str, recipient: str, now: float, reason: str = ""
    ) -> int:
        """Mark the document ``document_id`` delivered here for ``recipient`` as revoked: it
        leaves the pending list and is no longer offered; its bytes are kept. How many entries
        changed (0 when there was none, or it was revoked already)."""
        ...

    async def record_receipt(self, receipt: Receipt) -> None:
        """Record a receipt (status code, retrieval, or hop) for its document."""
        ...

    async def receipts(self, document_id: str) -> list[Receipt]:
        """Every receipt about ``document_id``, oldest first."""
        ...

    async def conflicts(self) -> list[Conflict]:
        """Transfers that came again with other bytes."""
        ...

    async def queue_summary(self, now: float) -> QueueSummary:
        """Counts per state and next hop, and the oldest waiting transfer."""
        ...

    async def journal_verify(self) -> JournalReport:
        """Check the hash chain of the journal."""
        ...
