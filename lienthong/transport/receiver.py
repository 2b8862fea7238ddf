"""Frames arriving from neighbours: reassemble, store durably, answer with a hop receipt.

A transfer frame is added to the reassembler of its (sender, transfer id), which writes it to a
file in ``partial_dir`` (never holding the package in memory; a small package that comes in
one frame, at most ``in_memory_max`` bytes, is kept as bytes instead). A complete package is
stored with :meth:`Store.receive` (which dedupes by transfer id and digest, and adopts the file
as the package's own), and only after that commit is the hop receipt published back to the
sender; a duplicate is answered again, since the first receipt may have been lost. Packages
from one neighbour stored in the same commit are answered in one frame (a ``receipts`` frame
when there are several). Receipts are published in tasks of their own: no frame handler waits
for a PUBACK, which a link that has stopped reading (:mod:`~lienthong.transport.readgate`)
would not see until frames are taken.

Transit fast path: when ``transit(recipients)`` gives next hops (no recipient is served here and
every one can be routed), the package is not read at all: the reassembler has checked its
digest, the frame names its recipients (and labels its DocumentId and sending agency for logs
and traces), and the store routes it in the same commit that stores it, before the hop receipt;
``on_routed(hops)`` then wakes the senders. The destination verifies the signature and checks the
signed recipient list. Any other new package (for a recipient here, or with recipients that
cannot be routed) is handed to ``on_package`` (the processor's queue), which reads it.

A hop receipt from a neighbour wakes the sender waiting for it (when it names the digest sent
and comes from the neighbour it went to) and is recorded in the store; receipts are recorded in
tasks of their own, so the link goes on reading frames meanwhile and the receipts arriving
together share one commit.

Frames that cannot be decoded or that contradict each other are refused with a log line and
dropped: they are not a package yet, and the sender keeps the package queued until a receipt,
so nothing is lost; it ends as a visible dead letter at the sender if it never gets through.
Partial transfers idle for longer than ``partial_ttl`` are dropped for the same reason, and
their files removed: when another frame arrives, and by :meth:`Receiver.sweep`, which looks
every ``partial_ttl / 4`` (a stalled neighbour sends nothing more). Files of partial transfers
a previous run left behind are removed at start (:meth:`Receiver.collect_leftovers`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path

import structlog

from lienthong.edxml import EdocPackage, StatusPackage, parse
from lienthong.edxml.streamed import LARGE_PACKAGE, validate_file
from lienthong.errors import LienthongError
from lienthong.logs import get_logger
from lienthong.metrics import Metrics
from lienthong.store import PackageMeta, ReceiveOutcome, Store
from lienthong.transport.frames import (
    MAX_RECEIPTS,
    FrameError,
    HopReceipt,
    HopReceipts,
    Package,
    TransferFrame,
    decode_frame,
    encode_frame,
    receipt_frame,
    receipts_of,
)
from lienthong.transport.link import Link, LinkDown
from lienthong.transport.reassembly import SUFFIX, Reassembler
from lienthong.transport.sender import ReceiptWaiter
from lienthong.transport.tasks import TaskSet
from lienthong.xmlwork import off_loop

_log = get_logger("lienthong.transport.receiver")

MAX_PARTIAL_PER_PEER = 16
"""Unfinished transfers kept per neighbour at once; older ones are dropped."""


def describe(source: bytes | Path, transfer_id: str) -> tuple[str, str]:
    """(DocumentId, sending agency) of the package (its bytes, or the file holding them), or
    placeholders when it cannot be read. A large package is read in pieces
    (:func:`validate_file`), never whole.

    A package that cannot be read is still stored (nothing is lost on bad input); the
    processor then quarantines it with the reason.
    """
    try:
        if isinstance(source, bytes):
            pkg: EdocPackage | StatusPackage | None = parse(source)
        elif source.stat().st_size <= LARGE_PACKAGE:
            pkg = parse(source.read_bytes())
        else:
            pkg = validate_file(source, max_bytes=source.stat().st_size).result.package
    except (LienthongError, OSError):
        pkg = None
    if pkg is None:
        return f"unreadable:{transfer_id}", "unknown"
    return pkg.document_id, pkg.sender


Hops = Mapping[str, Sequence[str]]
"""Next hop -> the recipients a transfer to it carries."""


def _not_transit(recipients: Sequence[str]) -> Hops | None:
    return None


class Receiver:
    """Handles every frame that reaches this node, over any link."""

    def __init__(
        self,
        *,
        store: Store,
        receipts: ReceiptWaiter,
        on_package: Callable[[str], Awaitable[None]],
        partial_dir: Path,
        max_package_bytes: int,
        partial_ttl: float = 600.0,
        concurrency: int = 32,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
        transit: Callable[[Sequence[str]], Hops | None] = _not_transit,
        on_routed: Callable[[Iterable[str]], None] = lambda hops: None,
        in_memory_max: int = 0,
        group_receipts: bool = True,
    ) -> None:
        """``metrics`` counts bytes, packages stored, duplicates and refused frames;
        ``concurrency`` bounds the packages being stored at once; ``transit(recipients)`` gives
        the next hops of a package only passing through (None: read it here), and
        ``on_routed(hops)`` is called once such a package's transfers are queued; a package
        in one frame of at most ``in_memory_max`` bytes is reassembled in memory;
        ``group_receipts`` answers the packages of one neighbour stored in one commit with one
        ``receipts`` frame (else one ``receipt`` frame each, for neighbours of an earlier
        release).
        ``partial_dir`` holds the files of transfers being reassembled: on the filesystem of
        the store's folder, since the store adopts them by renaming."""
        self.store = store
        self.partial_dir = partial_dir
        self.receipts = receipts
        self.on_package = on_package
        self.transit = transit
        self.on_routed = on_routed
        self.max_package_bytes = max_package_bytes
        self.in_memory_max = in_memory_max
        self.group_receipts = group_receipts
        self.partial_ttl = partial_ttl
        self.clock = clock
        self.metrics = metrics or Metrics()
        self.accepting = True
        self._slots = asyncio.Semaphore(concurrency)
        self._tasks = TaskSet()
        self._partial: dict[tuple[str, str], tuple[Reassembler, float]] = {}
        self._unanswered: dict[tuple[Link, str], list[tuple[str, str]]] = {}
        self.received = 0
        self.duplicates = 0
        self.refused = 0

    @property
    def partial_transfers(self) -> int:
        """Transfers begun by neighbours and not yet complete."""
        return len(self._partial)

    async def on_frame(self, link: Link, sender: str, payload: bytes) -> None:
        """Act on one frame from ``sender`` (proven by the broker's ACL)."""
        self.metrics.bytes_in(sender, len(payload))
        try:
            frame = decode_frame(payload)
        except FrameError as exc:
            self.refused += 1
            self.metrics.frame_refused(sender)
            _log.warning("frame_refused", peer=sender, reason=str(exc))
            return
        if isinstance(frame, HopReceipt | HopReceipts):
            receipts = receipts_of(frame)
            self._tasks.spawn(
                self._on_receipts(sender, receipts), name=f"ack:{receipts[0].transfer_id}"
            )
        elif self.accepting:
            await self._on_transfer_frame(link, sender, frame)

    async def _on_receipts(self, sender: str, receipts: Sequence[HopReceipt]) -> None:
        # The senders go on at once; the store records the receipts of one frame in one
        # operation, which commits with others.
        for receipt in receipts:
            if self.receipts.arrived(receipt.transfer_id, receipt.sha256, sender) and receipt.at:
                # Read late by the receipt's transit (milliseconds): fine for minutes of drift.
                self.metrics.clock_skew(sender, receipt.at - time.time())
        pairs = [(r.transfer_id, r.sha256) for r in receipts]
        try:
            outcomes: Sequence[bool | LienthongError] = await self.store.ack_many(
                pairs, self.clock(), by=sender
            )
        except LienthongError as exc:
            outcomes = [exc] * len(pairs)
        for (transfer_id, _), outcome in zip(pairs, outcomes, strict=True):
            if isinstance(outcome, LienthongError):
                _log.warning(
                    "hop_receipt_refused", peer=sender, transfer_id=transfer_id, reason=str(outcome)
                )

    async def _on_transfer_frame(self, link: Link, sender: str, frame: TransferFrame) -> None:
        key = (sender, frame.transfer_id)
        now = self.clock()
        reassembler, _ = self._partial.get(key) or (
            Reassembler(self.partial_dir, self.max_package_bytes, self.in_memory_max),
            now,
        )
        try:
            package = reassembler.add(frame)
        except (FrameError, OSError) as exc:
            self._partial.pop(key, None)
            reassembler.discard()
            self.refused += 1
            self.metrics.frame_refused(sender)
            _log.warning(
                "transfer_refused", peer=sender, transfer_id=frame.transfer_id, reason=str(exc)
            )
            return
        if package is None:
            self._partial[key] = (reassembler, now)
            self._forget_stale(now)
            return
        self._partial.pop(key, None)
        # Storing waits for a commit: done in its own task, so the link goes on reading frames
        # and packages arriving together share one commit (and one flush).
        await self._slots.acquire()
        self._tasks.spawn(
            self._store_package(link, sender, package), name=f"receive:{package.transfer_id}"
        )

    async def _store_package(self, link: Link, sender: str, package: Package) -> None:
        try:
            await self._on_package(link, sender, package)
        except LienthongError as exc:
            # Not stored (disk full, database locked): no receipt, so the sender sends again.
            _log.error(
                "transfer_not_stored", peer=sender, transfer_id=package.transfer_id, reason=str(exc)
            )
        finally:
            self._slots.release()
            # Adopted by the store, or not needed (a duplicate) or not stored: gone either way.
            if isinstance(package.source, Path):
                package.source.unlink(missing_ok=True)

    async def drain(self) -> None:
        """Wait until the packages being stored are stored (and answered)."""
        await self._tasks.drain()
        while self._unanswered:
            await asyncio.sleep(0)  # the callback that publishes them runs first
            await self._tasks.drain()

    def cancel(self) -> None:
        """Stop storing and answering: their senders get no receipt and send them again
        later."""
        self._unanswered.clear()
        self._tasks.cancel()

    def collect_leftovers(self) -> int:
        """Remove the files of partial transfers a previous run left (none is partial at
        start: their senders send them again); how many."""
        count = 0
        if self.partial_dir.is_dir():
            for path in self.partial_dir.glob(f"*{SUFFIX}"):
                path.unlink(missing_ok=True)
                count += 1
        return count

    async def sweep(self) -> None:
        """Drop stalled partial transfers every ``partial_ttl / 4``, until cancelled."""
        while True:
            await asyncio.sleep(self.partial_ttl / 4)
            self._forget_stale(self.clock())

    def _forget_stale(self, now: float) -> None:
        """Drop partial transfers idle past ``partial_ttl``, and each peer's oldest beyond
        :data:`MAX_PARTIAL_PER_PEER`, removing their files, so a peer cannot fill the disk
        with unfinished transfers (their senders send them again)."""
        stale = [k for k, (_, seen) in self._partial.items() if now - seen > self.partial_ttl]
        per_peer: dict[str, list[tuple[float, tuple[str, str]]]] = {}
        for key, (_, seen) in self._partial.items():
            per_peer.setdefault(key[0], []).append((seen, key))
        for entries in per_peer.values():
            entries.sort()
            stale += [key for _, key in entries[:-MAX_PARTIAL_PER_PEER]]
        for key in dict.fromkeys(stale):
            self._partial.pop(key)[0].discard()
            _log.warning("partial_transfer_dropped", peer=key[0], transfer_id=key[1])

    async def _on_package(self, link: Link, sender: str, package: Package) -> None:
        hops = self.transit(package.recipients)
        if hops is not None and package.document and package.origin:
            document_id, origin = package.document, package.origin
        else:
            # For a recipient here, the package itself names the document (never the frame).
            document_id, origin = await off_loop(describe, package.source, package.transfer_id)
        with structlog.contextvars.bound_contextvars(
            document_id=document_id, transfer_id=package.transfer_id, peer=sender
        ):
            # The reassembler has checked the digest: no need to hash the bytes again here.
            meta = PackageMeta(
                document_id, package.kind, origin, package.recipients, package.sha256, package.size
            )
            result = await self.store.receive(
                package.transfer_id, package.source, meta, sender, self.clock(), hops=hops
            )
            if result.outcome == ReceiveOutcome.CONFLICT:
                self.metrics.refused("reception", "other")
                _log.error("transfer_conflict", reason="same transfer id, other bytes: kept")
                return
            self._answer_soon(link, sender, package.transfer_id, meta.sha256)
            if result.outcome == ReceiveOutcome.DUPLICATE:
                self.duplicates += 1
                self.metrics.duplicate(sender)
                _log.info("transfer_duplicate")
                return
            self.received += 1
            self.metrics.received(package.kind, sender, result.package_id)
            # The one line of a transfer at this node: stored, and routed when passing through.
            _log.info(
                "transfer_stored",
                size=package.size,
                recipients=list(package.recipients),
                hops={hop: list(codes) for hop, codes in hops.items()} if hops else None,
            )
            if hops:
                self.on_routed(hops)
            else:
                await self.on_package(result.package_id)

    def _answer_soon(self, link: Link, sender: str, transfer_id: str, sha256: str) -> None:
        """Have the hop receipt of a package stored (or known) here published, with those of
        the other packages from ``sender`` answered before the loop's next turn.

        That groups the packages of one commit because the store resolves a batch's futures
        together and :meth:`_on_package` reaches this call from the store's answer without
        awaiting anything else: the tasks one commit wakes all run in the same turn, before a
        callback scheduled now. An ``await`` added on that path only makes the frames smaller
        (one receipt each at worst), never loses one."""
        key = (link, sender)
        waiting = self._unanswered.get(key)
        if waiting is None:
            self._unanswered[key] = waiting = []
            asyncio.get_running_loop().call_soon(self._answer_waiting, key)
        waiting.append((transfer_id, sha256))

    def _answer_waiting(self, key: tuple[Link, str]) -> None:
        link, sender = key
        waiting = self._unanswered.pop(key, [])  # none after cancel()
        size = MAX_RECEIPTS if self.group_receipts else 1
        for start in range(0, len(waiting), size):
            # Published in a task of its own: its PUBACK comes over the link these frames came
            # in by, which may have stopped reading until the frames waiting are taken, and
            # taking them may wait for a receive slot.
            group = waiting[start : start + size]
            self._tasks.spawn(self._answer(link, sender, group), name=f"receipt:{group[0][0]}")

    async def _answer(self, link: Link, sender: str, group: list[tuple[str, str]]) -> None:
        """Publish the hop receipts of ``group`` (transfer id, sha256) in one frame."""
        # The wall clock, not the injected one: the sender compares it with its own.
        frame = encode_frame(receipt_frame(group, at=time.time()))
        try:
            await link.publish(sender, frame)
            self.metrics.bytes_out(sender, len(frame))
        except LinkDown as exc:
            # The sender will send again and get its receipt then.
            _log.warning("hop_receipt_not_sent", reason=str(exc), transfers=len(group))
