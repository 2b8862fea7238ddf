"""Sending queued transfers to one neighbour until its hop receipt arrives.

One :class:`HopSender` per neighbour node. It waits until the link to that neighbour is up
(no attempt is counted while the link is down), takes a transfer with a lease (the store
counts the attempt), publishes the package as frames (a package in a file is read one chunk at
a time, never whole), and waits for the hop receipt. The lease is extended while the frames go
out and before the wait, so a long send on a slow link is not taken again meanwhile. The
receipt itself is recorded by whoever receives it (:class:`ReceiptWaiter` only wakes the
sender); a missing receipt or a failed publish is reported to the store, which schedules a
retry or dead-letters the transfer. Up to ``window`` transfers are in flight at once.

Stopping: :meth:`HopSender.stop_taking` ends the taking of new transfers; in-flight ones finish
(or time out) on their own, and :meth:`HopSender.in_flight` tells how many are left.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import structlog

from lienthong.logs import get_logger
from lienthong.metrics import Metrics
from lienthong.store import CorruptPackage, Lease, Store
from lienthong.transport.frames import Outgoing, TransferFrame, encode_frame
from lienthong.transport.link import Link, LinkDown
from lienthong.transport.tasks import TaskSet

_log = get_logger("lienthong.transport.sender")


class ReceiptWaiter:
    """Futures for hop receipts, keyed by transfer id, shared by the senders of a node.

    A receipt wakes its sender as soon as it arrives, if it names the digest sent and comes
    from the neighbour it was sent to; recording it in the store follows (and checks the same
    again). So a sender's window is not held by the commit of the receipt, whose loss would
    only make the transfer go once more."""

    def __init__(self) -> None:
        self._waiting: dict[str, tuple[asyncio.Future[None], str, str]] = {}
        self._refused: dict[str, str] = {}

    def expect(self, transfer_id: str, sha256: str, neighbour: str) -> asyncio.Future[None]:
        """A future resolved when ``neighbour``'s receipt for ``transfer_id`` with ``sha256``
        arrives."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting[transfer_id] = (future, sha256, neighbour)
        return future

    def arrived(self, transfer_id: str, sha256: str, by: str) -> bool:
        """Wake the sender waiting for ``transfer_id`` when the receipt matches what was sent;
        False if none was waiting for it (or it does not match)."""
        waiting = self._waiting.get(transfer_id)
        if waiting is None:
            return False
        _, sent, neighbour = waiting
        if by != neighbour:
            self._refused[transfer_id] = (
                f"a hop receipt for it came from {by}, not from {neighbour} it was sent to,"
                " and was refused"
            )
            return False
        if sha256 != sent:
            self._refused[transfer_id] = (
                f"the hop receipt from {by} names the digest {sha256}, not {sent} that was"
                " sent, and was refused"
            )
            return False
        future = self._waiting.pop(transfer_id)[0]
        if future.done():
            return False
        future.set_result(None)
        return True

    def refused(self, transfer_id: str) -> str | None:
        """Why a receipt that came for ``transfer_id`` was refused, if one was."""
        return self._refused.get(transfer_id)

    def forget(self, transfer_id: str, future: asyncio.Future[None]) -> None:
        """Stop waiting with ``future`` for ``transfer_id`` (sent, failed or cancelled); a
        newer wait for the same transfer (taken again after its lease ran out) stays."""
        waiting = self._waiting.get(transfer_id)
        if waiting is not None and waiting[0] is future:
            del self._waiting[transfer_id]
            self._refused.pop(transfer_id, None)


class HopSender:
    """Moves the queued transfers for ``neighbour`` over ``link``."""

    def __init__(
        self,
        *,
        neighbour: str,
        link: Link,
        store: Store,
        receipts: ReceiptWaiter,
        max_chunk: int,
        receipt_timeout: float,
        window: int,
        poll: float,
        clock: Callable[[], float] = time.time,
        metrics: Metrics | None = None,
    ) -> None:
        """``metrics`` counts bytes, acknowledged transfers, failures and hop latencies."""
        self.neighbour = neighbour
        self.link = link
        self.store = store
        self.receipts = receipts
        self.max_chunk = max_chunk
        self.receipt_timeout = receipt_timeout
        self.poll = poll
        self.clock = clock
        self.metrics = metrics or Metrics()
        self._slots = asyncio.Semaphore(window)
        self._wake = asyncio.Event()
        self._taking = True
        self._tasks = TaskSet()
        self.sent = 0
        self.failed = 0

    def wake(self) -> None:
        """New transfers may be due: look now rather than at the next poll."""
        self._wake.set()

    def stop_taking(self) -> None:
        """Take no new transfers; those in flight go on."""
        self._taking = False
        self._wake.set()

    @property
    def in_flight(self) -> int:
        """Transfers sent and not yet settled."""
        return len(self._tasks)

    async def run(self) -> None:
        """Take and send transfers until :meth:`stop_taking` (or cancellation); sends still
        in flight when this is cancelled are cancelled with it (their leases run out and the
        transfers are taken again after a restart)."""
        try:
            await self._take()
        finally:
            self._tasks.cancel()

    async def _take(self) -> None:
        while self._taking:
            if not await self.link.wait_up(self.poll):
                continue
            await self._slots.acquire()
            lease = None
            # Cleared before looking, not after: a transfer queued while the store looks
            # wakes the next look instead of waiting for the poll.
            self._wake.clear()
            try:
                if self._taking:
                    lease = await self.store.lease_transfer(self.neighbour, self.clock())
            finally:
                if lease is None:
                    self._slots.release()
            if lease is None:
                await self._idle()
                continue
            self._tasks.spawn(self._send(lease), name=f"send:{lease.transfer_id}")

    async def _idle(self) -> None:
        try:
            async with asyncio.timeout(self.poll):
                await self._wake.wait()
        except TimeoutError:
            pass

    async def drain(self) -> None:
        """Wait for the transfers in flight to settle."""
        await self._tasks.drain()

    async def _failed(self, lease: Lease, reason: str) -> None:
        """Report a failed attempt to the store (retry or dead letter); never raises."""
        self.failed += 1
        try:
            outcome = await asyncio.shield(self.store.fail(lease, reason, self.clock()))
        except Exception as exc:  # the lease runs out and the transfer is taken again
            _log.error("transfer_fail_not_recorded", reason=reason, error=str(exc))
            return
        self.metrics.send_failed(self.neighbour, outcome.outcome.value)
        _log.warning(
            "transfer_failed",
            attempt=lease.attempt,
            reason=reason,
            outcome=outcome.outcome.value,
            next_attempt_at=outcome.next_attempt_at,
        )

    async def _frames(self, lease: Lease) -> AsyncIterator[TransferFrame]:
        """The transfer's frames, read from the package's file a chunk at a time (from its
        bytes when the store says it is small)."""
        path = await self.store.package_file(lease.package_id)
        if path is None:
            data = await self.store.read_package(lease.package_id)
            out = self._outgoing(lease, len(data))
            for index in range(out.count):
                offset, length = out.span(index)
                yield out.frame(index, data[offset : offset + length])
            return
        with await asyncio.to_thread(Path.open, path, "rb") as source:
            out = self._outgoing(lease, os.fstat(source.fileno()).st_size)
            for index in range(out.count):
                chunk = await asyncio.to_thread(source.read, out.span(index)[1])
                yield out.frame(index, chunk)

    def _outgoing(self, lease: Lease, size: int) -> Outgoing:
        return Outgoing(
            lease.transfer_id,
            lease.kind,
            lease.recipients,
            lease.sha256,
            size,
            self.max_chunk,
            document=lease.document_id,
            origin=lease.sender,
        )

    async def _keep(self, lease: Lease, renew_at: float) -> float:
        """Extend the lease once half of it has passed; when to look again."""
        now = self.clock()
        if now < renew_at:
            return renew_at
        expires = await self.store.extend_lease(lease, now)
        if expires is None:
            _log.warning("lease_lost", reason="the transfer was taken or settled meanwhile")
            return float("inf")
        return now + (expires - now) / 2

    async def _send(self, lease: Lease) -> None:
        with structlog.contextvars.bound_contextvars(
            document_id=lease.document_id, transfer_id=lease.transfer_id, peer=self.neighbour
        ):
            waiting = self.receipts.expect(lease.transfer_id, lease.sha256, self.neighbour)
            try:
                size = 0
                renew_at = self.clock() + (lease.expires_at - self.clock()) / 2
                # Latency is measured on the monotonic clock: ``clock`` is for schedules.
                started = time.monotonic()
                async for frame in self._frames(lease):
                    size = frame.size
                    renew_at = await self._keep(lease, renew_at)
                    payload = encode_frame(frame)
                    await self.link.publish(self.neighbour, payload)
                    self.metrics.bytes_out(self.neighbour, len(payload))
                await self._keep(lease, renew_at)
                async with asyncio.timeout(self.receipt_timeout):
                    await waiting
                self.sent += 1
                self.metrics.sent(lease.kind, self.neighbour, time.monotonic() - started)
                # Debug: the transfer's info line is where it was stored (one per node).
                _log.debug("transfer_acked", attempt=lease.attempt, size=size)
            except (LinkDown, TimeoutError) as exc:
                reason = str(exc) or f"no hop receipt within {self.receipt_timeout:g} s"
                refused = self.receipts.refused(lease.transfer_id)
                if refused is not None:
                    reason = f"no matching hop receipt within {self.receipt_timeout:g} s: {refused}"
                await self._failed(lease, reason)
            except CorruptPackage as exc:
                # The store quarantined the package and dead-lettered this transfer already.
                _log.error("package_corrupted", package_id=lease.package_id, reason=str(exc))
            except Exception as exc:  # a package that cannot be read or framed: retry, visibly
                _log.error("transfer_send_error", reason=str(exc), exc_info=True)
                await self._failed(lease, f"cannot send: {exc}")
            finally:
                self.receipts.forget(lease.transfer_id, waiting)
                self._slots.release()
