"""An in-memory :class:`~lienthong.store.base.Store` for tests and demos.

Same contract as :class:`~lienthong.store.sqlite.SqliteStore` (one test suite checks both),
nothing durable. Each method checks everything it will change before changing anything, and
runs without awaiting in between, so each is atomic on the event loop.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, Self

from lienthong.config import StoreSettings
from lienthong.store import retry
from lienthong.store.errors import DigestMismatch, UnknownId, WrongPeer
from lienthong.store.journal import GENESIS, JournalEntry, JournalReport, make_entry, verify_chain
from lienthong.store.lifecycle import (
    PACKAGE_EXPIRABLE,
    InboxState,
    PackageState,
    TransferState,
    check,
)
from lienthong.store.model import (
    Conflict,
    DeadLetter,
    Expired,
    FailOutcome,
    FailResult,
    InboxEntry,
    Lease,
    OldestWaiting,
    PackageMeta,
    PackageRecord,
    QueueSummary,
    Receipt,
    ReceiveOutcome,
    ReceiveResult,
)

_SETTLED = (InboxState.DONE.value, InboxState.REVOKED.value)
"""Inbox states that are no longer pending."""


@dataclass
class _Transfer:
    transfer_id: str
    package_id: str
    next_hop: str
    recipients: tuple[str, ...]
    state: TransferState
    created_at: float
    since: float
    next_attempt_at: float
    attempts: int = 0
    lease_token: str | None = None
    lease_expires_at: float | None = None
    last_error: str | None = None
    updated_at: float = 0.0


@dataclass
class _Received:
    sha256: str
    duplicates: int = 0


@dataclass
class _Memory:
    packages: dict[str, PackageRecord] = field(default_factory=dict)
    since: dict[str, float] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    transfers: dict[str, _Transfer] = field(default_factory=dict)
    received: dict[str, _Received] = field(default_factory=dict)
    conflicts: list[Conflict] = field(default_factory=list)
    inbox: list[InboxEntry] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    journal: list[JournalEntry] = field(default_factory=list)


class MemoryStore:
    """Packages, transfers and journal in dictionaries; ``data`` is public for tamper tests."""

    def __init__(
        self, settings: StoreSettings | None = None, rng: random.Random | None = None
    ) -> None:
        self.settings = settings or StoreSettings()
        self._rng = rng or random.Random()
        self.data = _Memory()

    @property
    def intake_blocked(self) -> str | None:
        """Always None: memory does not fill up the way a disk does."""
        return None

    async def open(self) -> None:
        """Nothing to open."""

    async def close(self) -> None:
        """Nothing to close."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def resume_intake(self) -> bool:
        """Always works."""
        return True

    # -- helpers ---------------------------------------------------------------------------

    def _log(
        self, at: float, entity: str, entity_id: str, frm: str | None, to: str, detail: str = ""
    ) -> None:
        j = self.data.journal
        head = (j[-1].seq, j[-1].hash) if j else (0, GENESIS)
        j.append(make_entry(head, at, entity, entity_id, frm, to, detail))

    def _package(self, package_id: str) -> PackageRecord:
        try:
            return self.data.packages[package_id]
        except KeyError:
            raise UnknownId(f"no package {package_id}") from None

    def _transfer(self, transfer_id: str) -> _Transfer:
        try:
            return self.data.transfers[transfer_id]
        except KeyError:
            raise UnknownId(f"no transfer {transfer_id}") from None

    def _move_package(
        self, pid: str, to: PackageState, now: float, detail: str = "", reason: str | None = None
    ) -> None:
        rec = self._package(pid)
        check("package", pid, rec.state, to)
        self.data.packages[pid] = replace(
            rec, state=to, updated_at=now, reason=reason if reason is not None else rec.reason
        )
        self._log(now, "package", pid, rec.state, to, detail)

    def _move_transfer(
        self, t: _Transfer, to: TransferState, now: float, detail: str = "", **sets: Any
    ) -> None:
        check("transfer", t.transfer_id, t.state, to)
        frm = t.state
        t.state = to
        t.updated_at = now
        for name, value in sets.items():
            setattr(t, name, value)
        self._log(now, "transfer", t.transfer_id, frm, to, detail)

    def _bury(self, t: _Transfer, now: float, reason: str) -> None:
        """Dead-letter the transfer with ``reason`` as its last error."""
        self._move_transfer(t, TransferState.DEAD, now, reason, last_error=reason, lease_token=None)

    def _store(
        self, data: bytes, meta: PackageMeta, peer: str | None, before: PackageState, now: float
    ) -> None:
        pid = meta.sha256
        check("package", pid, before, PackageState.STORED)
        self.data.blobs[pid] = bytes(data)
        self.data.packages[pid] = PackageRecord(
            pid, meta, PackageState.STORED, peer, now, now, None
        )
        self.data.since[pid] = now
        origin = f"from {peer}" if peer else "submitted here"
        self._log(
            now,
            "package",
            pid,
            before,
            PackageState.STORED,
            f"{meta.kind} {meta.document_id} {origin}",
        )

    def _add_receipt(self, r: Receipt) -> None:
        self.data.receipts.append(r)
        self._log(r.at, "receipt", r.document_id, None, f"{r.level} {r.code}", f"by {r.by}")

    def _maybe_done(self, pid: str, now: float) -> None:
        rec = self.data.packages[pid]
        open_transfers = any(
            t.package_id == pid and t.state != TransferState.ACKED
            for t in self.data.transfers.values()
        )
        open_entries = any(e.package_id == pid and e.state not in _SETTLED for e in self.data.inbox)
        done_from = (PackageState.ROUTED, PackageState.DELIVERED, PackageState.EXPIRED)
        if rec.state in done_from and not open_transfers and not open_entries:
            self._move_package(pid, PackageState.DONE, now)

    # -- intake ------------------------------------------------------------------------------

    async def put_package(self, data: bytes, meta: PackageMeta, now: float) -> tuple[str, bool]:
        """Store a package submitted here: ``(package_id, duplicate)``."""
        meta.check(data)
        if meta.sha256 in self.data.packages:
            return meta.sha256, True
        self._store(data, meta, None, PackageState.SIGNED, now)
        return meta.sha256, False

    async def receive(
        self, transfer_id: str, data: bytes, meta: PackageMeta, from_peer: str, now: float
    ) -> ReceiveResult:
        """Store a package from a neighbour, deduped by transfer id and digest."""
        meta.check(data)
        pid = meta.sha256
        seen = self.data.received.get(transfer_id)
        if seen is not None and seen.sha256 != pid:
            where = f"memory:{transfer_id}.{pid}"
            self.data.blobs[where] = bytes(data)
            self.data.conflicts.append(
                Conflict(transfer_id, from_peer, seen.sha256, pid, where, now)
            )
            self._log(
                now,
                "transfer-in",
                transfer_id,
                None,
                "conflict",
                f"from {from_peer}: sha256 {pid}, had {seen.sha256}; kept at {where}",
            )
            return ReceiveResult(ReceiveOutcome.CONFLICT, seen.sha256)
        if seen is not None:
            seen.duplicates += 1
            return ReceiveResult(ReceiveOutcome.DUPLICATE, pid)
        known = pid in self.data.packages
        if not known:
            self._store(data, meta, from_peer, PackageState.RECEIVED, now)
        self.data.received[transfer_id] = _Received(pid, 1 if known else 0)
        return ReceiveResult(ReceiveOutcome.DUPLICATE if known else ReceiveOutcome.NEW, pid)

    # -- packages ------------------------------------------------------------------------------

    async def read_package(self, package_id: str) -> bytes:
        """The bytes of a stored package."""
        self._package(package_id)
        return self.data.blobs[package_id]

    async def get_package(self, package_id: str) -> PackageRecord:
        """The package's record, or :class:`UnknownId`."""
        return self._package(package_id)

    async def packages(self, state: PackageState) -> list[PackageRecord]:
        """Packages in ``state``, oldest first."""
        found = [p for p in self.data.packages.values() if p.state == state]
        return sorted(found, key=lambda p: p.created_at)

    async def set_package_state(
        self, package_id: str, to_state: PackageState, now: float, reason: str | None = None
    ) -> None:
        """Move a package along its life cycle."""
        self._move_package(package_id, to_state, now, reason or "", reason)

    # -- transfers ---------------------------------------------------------------------------

    async def enqueue(
        self, package_id: str, hops: Mapping[str, Sequence[str]], now: float
    ) -> list[str]:
        """One queued transfer per next hop; the package becomes routed."""
        if not hops:
            raise ValueError("enqueue needs at least one next hop")
        self._move_package(package_id, PackageState.ROUTED, now, ", ".join(hops))
        ids = []
        for hop, recipients in hops.items():
            tid = uuid.uuid4().hex
            self.data.transfers[tid] = _Transfer(
                tid,
                package_id,
                hop,
                tuple(recipients),
                TransferState.QUEUED,
                now,
                now,
                now,
                updated_at=now,
            )
            self._log(now, "transfer", tid, None, TransferState.QUEUED, f"to {hop}")
            ids.append(tid)
        return ids

    async def queued_transfers(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """``(transfer_id, next_hop, recipients)`` of every queued transfer (not in flight)."""
        return [
            (t.transfer_id, t.next_hop, t.recipients)
            for t in self.data.transfers.values()
            if t.state == TransferState.QUEUED
        ]

    async def retarget(
        self, transfer_id: str, next_hop: str, recipients: Sequence[str], now: float
    ) -> bool:
        """Send a still-queued transfer to another next hop; False when it is no longer queued."""
        transfer = self.data.transfers.get(transfer_id)
        if transfer is None or transfer.state != TransferState.QUEUED:
            return False
        detail = f"re-routed from {transfer.next_hop} to {next_hop}"
        self._log(now, "transfer", transfer_id, "queued", "queued", detail)
        transfer.next_hop, transfer.recipients = next_hop, tuple(recipients)
        transfer.next_attempt_at = transfer.updated_at = now
        return True

    def _due(self, next_hop: str | None, now: float) -> _Transfer | None:
        due = [
            t
            for t in self.data.transfers.values()
            if (next_hop is None or t.next_hop == next_hop)
            and (
                (t.state == TransferState.QUEUED and t.next_attempt_at <= now)
                or (t.state == TransferState.IN_FLIGHT and (t.lease_expires_at or 0) <= now)
            )
        ]
        return min(due, key=lambda t: t.next_attempt_at) if due else None

    async def lease_transfer(self, next_hop: str | None, now: float) -> Lease | None:
        """Take the next due transfer and count the attempt."""
        policy = self.settings.retry
        while (t := self._due(next_hop, now)) is not None:
            if t.state == TransferState.IN_FLIGHT:
                error = f"lease ran out during attempt {t.attempts} (sender lost)"
                decision = retry.decide(policy, t.attempts, t.since, now, error, self._rng)
                if decision.dead:
                    self._bury(t, now, decision.reason)
                    continue
                self._move_transfer(
                    t, TransferState.QUEUED, now, error, last_error=error, lease_token=None
                )
            token = uuid.uuid4().hex
            expires = now + self.settings.lease_s
            self._move_transfer(
                t,
                TransferState.IN_FLIGHT,
                now,
                f"attempt {t.attempts + 1}",
                attempts=t.attempts + 1,
                lease_token=token,
                lease_expires_at=expires,
            )
            meta = self.data.packages[t.package_id].meta
            return Lease(
                t.transfer_id,
                t.package_id,
                t.next_hop,
                t.recipients,
                meta.kind,
                meta.document_id,
                t.package_id,
                t.attempts,
                token,
                expires,
            )
        return None

    async def ack(self, transfer_id: str, sha256: str, now: float, by: str | None = None) -> bool:
        """Record the hop receipt; False if it was acknowledged already."""
        t = self.data.transfers.get(transfer_id)
        if t is None:
            raise UnknownId(f"hop receipt for unknown transfer {transfer_id}")
        if by is not None and by != t.next_hop:
            raise WrongPeer(
                f"hop receipt for transfer {transfer_id} from {by}; it was sent to {t.next_hop}"
            )
        if t.package_id != sha256:
            raise DigestMismatch(
                f"hop receipt for transfer {transfer_id} names sha256 {sha256}, "
                f"the package is {t.package_id}"
            )
        if t.state == TransferState.ACKED:
            return False
        self._move_transfer(
            t, TransferState.ACKED, now, f"hop receipt from {t.next_hop}", lease_token=None
        )
        doc = self.data.packages[t.package_id].meta.document_id
        self._add_receipt(Receipt(doc, "hop", "stored", t.next_hop, now, transfer_id))
        self._maybe_done(t.package_id, now)
        return True

    async def fail(self, lease: Lease, error: str, now: float) -> FailResult:
        """Schedule a retry of the leased transfer, or dead-letter it."""
        t = self._transfer(lease.transfer_id)
        if t.state != TransferState.IN_FLIGHT or t.lease_token != lease.token:
            return FailResult(FailOutcome.STALE)
        decision = retry.decide(self.settings.retry, t.attempts, t.since, now, error, self._rng)
        if decision.dead:
            self._bury(t, now, decision.reason)
            return FailResult(FailOutcome.DEAD)
        self._move_transfer(
            t,
            TransferState.QUEUED,
            now,
            error,
            last_error=error,
            lease_token=None,
            next_attempt_at=decision.next_attempt_at,
        )
        return FailResult(FailOutcome.RETRY, decision.next_attempt_at)

    async def dead_letters(self) -> list[DeadLetter]:
        """Dead transfers and expired packages with their reasons, oldest first."""
        out = [
            DeadLetter(
                "transfer",
                t.transfer_id,
                t.package_id,
                self.data.packages[t.package_id].meta.document_id,
                t.next_hop,
                t.attempts,
                t.last_error or "",
                t.updated_at,
            )
            for t in sorted(self.data.transfers.values(), key=lambda t: t.updated_at)
            if t.state == TransferState.DEAD
        ]
        out += [
            DeadLetter(
                "package",
                p.package_id,
                p.package_id,
                p.meta.document_id,
                None,
                0,
                p.reason or "",
                p.updated_at,
            )
            for p in sorted(self.data.packages.values(), key=lambda p: p.updated_at)
            if p.state == PackageState.EXPIRED
        ]
        return out

    def _requeue_transfer(self, t: _Transfer, now: float) -> None:
        self._move_transfer(
            t, TransferState.QUEUED, now, "requeued", attempts=0, since=now, next_attempt_at=now
        )
        self._revive(t.package_id, now)

    def _revive(self, pid: str, now: float) -> None:
        if self.data.packages[pid].state != PackageState.EXPIRED:
            return
        routed = any(t.package_id == pid for t in self.data.transfers.values())
        self._move_package(
            pid, PackageState.ROUTED if routed else PackageState.STORED, now, "requeued"
        )
        self.data.since[pid] = now

    async def requeue(self, item_id: str | None, now: float) -> int:
        """Put a dead transfer or expired package (or, with None, all of them) back in the queue."""
        transfers = self.data.transfers
        if item_id is None:
            tids = [t.transfer_id for t in transfers.values() if t.state == TransferState.DEAD]
            pids = [
                p.package_id for p in self.data.packages.values() if p.state == PackageState.EXPIRED
            ]
        elif item_id in transfers:
            if transfers[item_id].state != TransferState.DEAD:
                raise UnknownId(
                    f"transfer {item_id} is {transfers[item_id].state}, "
                    "not dead: nothing to requeue"
                )
            tids, pids = [item_id], []
        elif item_id in self.data.packages:
            if self.data.packages[item_id].state != PackageState.EXPIRED:
                raise UnknownId(
                    f"package {item_id} is {self.data.packages[item_id].state}, "
                    "not expired: nothing to requeue"
                )
            tids, pids = [], [item_id]
        else:
            raise UnknownId(f"no dead transfer or expired package with id {item_id}")
        for tid in tids:
            self._requeue_transfer(transfers[tid], now)
        count = len(tids)
        for pid in pids:
            if self.data.packages[pid].state == PackageState.EXPIRED:
                for t in list(transfers.values()):
                    if t.package_id == pid and t.state == TransferState.DEAD:
                        self._requeue_transfer(t, now)
                self._revive(pid, now)
                count += 1
        return count

    async def expire(self, now: float) -> Expired:
        """Dead-letter packages and queued transfers past their maximum age."""
        max_age = self.settings.package_max_age_s
        old = [
            p.package_id
            for p in self.data.packages.values()
            if p.state in PACKAGE_EXPIRABLE and self.data.since[p.package_id] <= now - max_age
        ]
        dead: list[str] = []
        for pid in old:
            reason = f"package expired: older than {max_age:g} s"
            for t in self.data.transfers.values():
                if t.package_id == pid and t.state in (
                    TransferState.QUEUED,
                    TransferState.IN_FLIGHT,
                ):
                    self._move_transfer(
                        t, TransferState.DEAD, now, reason, last_error=reason, lease_token=None
                    )
                    dead.append(t.transfer_id)
            self._move_package(pid, PackageState.EXPIRED, now, reason, reason)
        t_age = self.settings.retry.max_age_s
        for t in self.data.transfers.values():
            if t.state == TransferState.QUEUED and t.since <= now - t_age:
                reason = f"transfer expired: queued longer than {t_age:g} s"
                self._move_transfer(t, TransferState.DEAD, now, reason, last_error=reason)
                dead.append(t.transfer_id)
        return Expired(tuple(old), tuple(dead))

    # -- inbox and receipts ---------------------------------------------------------------

    async def inbox_add(self, package_id: str, recipients: Sequence[str], now: float) -> None:
        """Deliver a verified package to local recipients."""
        self._move_package(package_id, PackageState.DELIVERED, now, ", ".join(recipients))
        meta = self.data.packages[package_id].meta
        for recipient in recipients:
            entry_id = len(self.data.inbox) + 1
            self.data.inbox.append(
                InboxEntry(
                    entry_id,
                    package_id,
                    meta.document_id,
                    meta.kind,
                    meta.sender,
                    recipient,
                    "new",
                    now,
                )
            )
            self._log(now, "inbox", f"{package_id}:{recipient}", None, InboxState.NEW)

    async def inbox_list(
        self, recipient: str | None = None, pending: bool = True
    ) -> list[InboxEntry]:
        """Inbox entries, oldest first."""
        return [
            e
            for e in self.data.inbox
            if (recipient is None or e.recipient == recipient)
            and not (pending and e.state in _SETTLED)
        ]

    async def inbox_entry(self, entry_id: int) -> InboxEntry | None:
        """The inbox entry ``entry_id`` in any state, or None when there is none."""
        if not 1 <= entry_id <= len(self.data.inbox):
            return None
        return self.data.inbox[entry_id - 1]

    async def inbox_ack(self, entry_id: int, ok: bool, now: float, detail: str = "") -> None:
        """Record the office software's retrieval (or its failure) of an inbox entry."""
        if not 1 <= entry_id <= len(self.data.inbox):
            raise UnknownId(f"no inbox entry {entry_id}")
        entry = self.data.inbox[entry_id - 1]
        if entry.state in _SETTLED:
            return  # retrieved or revoked already: a repeated acknowledgement changes nothing
        to = InboxState.DONE if ok else InboxState.FAILED
        check("inbox entry", str(entry_id), entry.state, to)
        self.data.inbox[entry_id - 1] = replace(entry, state=to.value)
        self._log(now, "inbox entry", str(entry_id), entry.state, to, detail)
        self._add_receipt(
            Receipt(
                entry.document_id,
                "retrieval",
                "done" if ok else "fail",
                entry.recipient,
                now,
                detail,
            )
        )
        self._maybe_done(entry.package_id, now)

    async def inbox_revoke(
        self, document_id: str, recipient: str, now: float, reason: str = ""
    ) -> int:
        """Mark the document's entries for ``recipient`` revoked; how many changed."""
        count = 0
        for i, entry in enumerate(self.data.inbox):
            if (
                entry.document_id == document_id
                and entry.recipient == recipient
                and entry.kind == "edoc"
                and entry.state != InboxState.REVOKED.value
            ):
                check("inbox entry", str(entry.entry_id), entry.state, InboxState.REVOKED)
                self.data.inbox[i] = replace(entry, state=InboxState.REVOKED.value)
                entry_id = str(entry.entry_id)
                self._log(now, "inbox entry", entry_id, entry.state, InboxState.REVOKED, reason)
                self._maybe_done(entry.package_id, now)
                count += 1
        return count

    async def record_receipt(self, receipt: Receipt) -> None:
        """Record a receipt for its document."""
        self._add_receipt(receipt)

    async def receipts(self, document_id: str) -> list[Receipt]:
        """Receipts about ``document_id``, oldest first."""
        found = [r for r in self.data.receipts if r.document_id == document_id]
        return sorted(found, key=lambda r: r.at)

    async def conflicts(self) -> list[Conflict]:
        """Transfers that came again with other bytes."""
        return list(self.data.conflicts)

    async def queue_summary(self, now: float) -> QueueSummary:
        """Counts per state and next hop, and the oldest waiting transfer."""
        packages: dict[str, int] = {}
        for p in self.data.packages.values():
            packages[p.state] = packages.get(p.state, 0) + 1
        transfers: dict[str, int] = {}
        per_hop: dict[str, dict[str, int]] = {}
        for t in self.data.transfers.values():
            transfers[t.state] = transfers.get(t.state, 0) + 1
            hop = per_hop.setdefault(t.next_hop, {})
            hop[t.state] = hop.get(t.state, 0) + 1
        waiting = [
            t
            for t in self.data.transfers.values()
            if t.state in (TransferState.QUEUED, TransferState.IN_FLIGHT)
        ]
        first = min(waiting, key=lambda t: t.created_at) if waiting else None
        oldest_per_hop: dict[str, float] = {}
        for t in waiting:
            age = now - t.created_at
            oldest_per_hop[t.next_hop] = max(age, oldest_per_hop.get(t.next_hop, 0.0))
        return QueueSummary(
            packages,
            transfers,
            per_hop,
            OldestWaiting(first.transfer_id, first.next_hop, first.state, now - first.created_at)
            if first
            else None,
            sum(r.duplicates for r in self.data.received.values()),
            len(self.data.conflicts),
            oldest_per_hop,
        )

    async def journal_verify(self) -> JournalReport:
        """Check the journal's hash chain (the head is the last entry kept)."""
        return verify_chain(self.data.journal, None)
