"""The sender of one neighbour takes transfers as soon as they are queued."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog

from lienthong.config import StoreSettings
from lienthong.store import Lease, PackageMeta, SqliteStore
from lienthong.transport.sender import HopSender, ReceiptWaiter

NEIGHBOUR = "000.00.00.G22"


class _UpLink:
    """Stands for a link that is up; what is published is recorded."""

    def __init__(self) -> None:
        self.published: list[bytes] = []

    async def wait_up(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        return True

    async def publish(self, to: str, payload: bytes) -> None:
        self.published.append(payload)


def _sender(store: SqliteStore, link: _UpLink, **settings: Any) -> HopSender:
    """A sender of one transfer at a time, polling hourly, whose receipts never come."""
    return HopSender(
        neighbour=NEIGHBOUR,
        link=link,  # type: ignore[arg-type]
        store=store,
        receipts=ReceiptWaiter(),
        max_chunk=1024,
        receipt_timeout=3600.0,
        window=1,
        poll=3600.0,
        **settings,
    )


class _QueuedWhileLooking(SqliteStore):
    """A store where a transfer is queued (and the sender woken) while the sender's first look
    for one is under way, so that look finds nothing."""

    sender: HopSender
    looks = 0

    async def lease_transfer(self, next_hop: str | None, now: float) -> Lease | None:
        self.looks += 1
        found = await super().lease_transfer(next_hop, now)
        if self.looks == 1:
            self.sender.wake()
        return found


async def test_transfer_queued_during_a_look_is_taken_without_waiting_for_the_poll(
    tmp_path: Path,
) -> None:
    """A wake that comes while the sender looks for work makes it look again at once, even with
    an hour between polls."""
    async with _QueuedWhileLooking(tmp_path / "state") as store:
        sender = _sender(store, _UpLink())
        store.sender = sender
        task = asyncio.create_task(sender.run())
        try:
            async with asyncio.timeout(60):
                while store.looks < 2:  # noqa: ASYNC110 - polls state the code under test owns
                    await asyncio.sleep(0.01)
        finally:
            sender.stop_taking()
            task.cancel()
        assert store.looks >= 2


async def test_receipt_wakes_its_sender_only_from_the_next_hop_with_the_digest_sent() -> None:
    """A receipt naming another digest, or from another neighbour, leaves the sender waiting;
    the receipt that matches wakes it."""
    waiter = ReceiptWaiter()
    waiting = waiter.expect("t-1", "a" * 64, NEIGHBOUR)
    assert not waiter.arrived("t-1", "b" * 64, NEIGHBOUR)
    assert not waiter.arrived("t-1", "a" * 64, "000.00.00.H99")
    assert not waiting.done()
    assert waiter.arrived("t-1", "a" * 64, NEIGHBOUR)
    assert waiting.done()


class _SlowLink(_UpLink):
    """A link whose publishes wait for the test; the clock moves on meanwhile."""

    def __init__(self, now: list[float]) -> None:
        super().__init__()
        self.now = now
        self.go = asyncio.Event()

    async def publish(self, to: str, payload: bytes) -> None:
        self.published.append(payload)
        if len(self.published) == 1:
            self.now[0] += 45.0  # the first frame took most of the lease
            await self.go.wait()


async def test_long_send_extends_its_lease_so_it_is_not_taken_again(tmp_path: Path) -> None:
    """While a send outlasts the lease it was taken with, the sender extends the lease: at a
    time past the first lease's end, the transfer is still taken."""
    now = [1_700_000_000.0]
    data = b"<edXML/>".ljust(5000, b" ")
    meta = PackageMeta.for_bytes(data, "doc", "edoc", "000.00.00.H49", [NEIGHBOUR])
    async with SqliteStore(tmp_path / "state", StoreSettings(lease_s=60.0)) as store:
        await store.put_package(data, meta, now[0])
        await store.enqueue(meta.sha256, {NEIGHBOUR: [NEIGHBOUR]}, now[0])
        link = _SlowLink(now)
        sender = _sender(store, link, clock=lambda: now[0])
        task = asyncio.create_task(sender.run())
        try:
            async with asyncio.timeout(60):
                while not link.published:  # noqa: ASYNC110 - waits for the first frame
                    await asyncio.sleep(0.01)
            link.go.set()
            async with asyncio.timeout(60):
                while len(link.published) < 5:  # noqa: ASYNC110 - waits for every frame
                    await asyncio.sleep(0.01)
            now[0] += 30.0  # 75 s after taking: past the first lease, within the extended one
            assert await store.lease_transfer(NEIGHBOUR, now[0]) is None
        finally:
            sender.stop_taking()
            task.cancel()


async def test_a_refused_receipt_is_named_in_the_failure(tmp_path: Path) -> None:
    """When the only receipt that came names another digest, the failed attempt says so
    rather than that no receipt came."""
    receipts = ReceiptWaiter()
    link = _UpLink()
    async with SqliteStore(tmp_path / "state") as store:
        data = b"<edXML/>"
        meta = PackageMeta.for_bytes(data, "doc-1", "edoc", "000.00.00.H49", ["000.00.00.H41"])
        package_id, _ = await store.put_package(data, meta, 1.0)
        (tid,) = await store.enqueue(package_id, {NEIGHBOUR: ["000.00.00.H41"]}, 1.0)
        sender = HopSender(
            neighbour=NEIGHBOUR,
            link=link,  # type: ignore[arg-type]
            store=store,
            receipts=receipts,
            max_chunk=1024,
            receipt_timeout=0.5,
            window=1,
            poll=3600.0,
        )
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(sender.run())
            try:
                async with asyncio.timeout(60):
                    while not link.published:  # noqa: ASYNC110 - polls the fake link
                        await asyncio.sleep(0.01)
                    receipts.arrived(tid, "0" * 64, NEIGHBOUR)
                    while not any(e["event"] == "transfer_failed" for e in logs):  # noqa: ASYNC110
                        await asyncio.sleep(0.05)
            finally:
                sender.stop_taking()
                task.cancel()
    (failed,) = [e for e in logs if e["event"] == "transfer_failed"]
    assert failed["reason"].startswith("no matching hop receipt within 0.5 s")
    assert f"names the digest {'0' * 64}, not {package_id}" in failed["reason"]
