"""The receiver bounds what a neighbour can leave half-sent, and passes packages bound
elsewhere on without reading them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from lienthong.metrics import Metrics
from lienthong.store import PackageMeta, SqliteStore
from lienthong.transport.frames import (
    HopReceipt,
    HopReceipts,
    TransferFrame,
    decode_frame,
    encode_frame,
    receipt_frame,
    split_into_frames,
)
from lienthong.transport.receiver import MAX_PARTIAL_PER_PEER, Receiver
from lienthong.transport.sender import ReceiptWaiter

PEER = "000.00.00.G22"
NEXT = "000.00.00.H41"
FAR = "000.03.07.H41"


async def _nothing(package_id: str) -> None:
    raise AssertionError(f"no package should complete, got {package_id}")


def _receiver(store: SqliteStore, tmp_path: Path, **settings: Any) -> Receiver:
    """A receiver over ``store`` whose processor must never be handed a package."""
    settings.setdefault("receipts", ReceiptWaiter())
    return Receiver(
        store=store,
        on_package=_nothing,
        partial_dir=tmp_path / "partial",
        max_package_bytes=1 << 20,
        metrics=Metrics(),
        **settings,
    )


def _idle_receiver(tmp_path: Path, **settings: Any) -> Receiver:
    """A receiver over a store that is never opened: no package may complete."""
    return _receiver(SqliteStore(tmp_path / "state"), tmp_path, **settings)


async def test_unfinished_transfers_per_peer_are_capped(tmp_path: Path) -> None:
    """A neighbour that starts many transfers and finishes none holds at most the cap."""
    receiver = _idle_receiver(tmp_path)
    for i in range(MAX_PARTIAL_PER_PEER + 10):
        data = bytes([i]) * 5000
        first = split_into_frames(f"t{i:04d}", "edoc", ["000.00.00.H49"], data, 1024)[0]
        await receiver.on_frame(None, PEER, encode_frame(first))  # type: ignore[arg-type]
    assert receiver.partial_transfers == MAX_PARTIAL_PER_PEER


class _RecordingLink:
    """Stands for the link a hop receipt goes back over: records what is published, and what
    the store held at that moment."""

    def __init__(self, store: SqliteStore, package_id: str) -> None:
        self.store = store
        self.package_id = package_id
        self.published: list[tuple[str, bytes, str]] = []

    async def publish(self, to: str, payload: bytes) -> None:
        record = await self.store.get_package(self.package_id)
        self.published.append((to, payload, record.state))


async def test_package_passing_through_is_routed_unread_before_its_hop_receipt(
    tmp_path: Path,
) -> None:
    """Bytes that are not even XML, for recipients beyond this node, are stored and routed in
    one commit without being read; the hop receipt goes out after that commit, and the package
    never reaches the processor."""
    data = b"\x00not xml at all\xff" * 100
    frames = split_into_frames(
        "t-transit", "edoc", [FAR], data, 1024, document="7/UBND", origin="000.01.05.H49"
    )
    routed: list[list[str]] = []
    async with SqliteStore(tmp_path / "state") as store:
        link = _RecordingLink(store, frames[0].sha256)
        receiver = _receiver(
            store,
            tmp_path,
            transit=lambda recipients: {NEXT: tuple(recipients)},
            on_routed=lambda hops: routed.append(list(hops)),
        )
        for frame in frames:
            await receiver.on_frame(link, PEER, encode_frame(frame))  # type: ignore[arg-type]
        await receiver.drain()
        assert routed == [[NEXT]]
        assert [(to, state) for to, _, state in link.published] == [(PEER, "routed")]
        receipt = decode_frame(link.published[0][1])
        assert isinstance(receipt, HopReceipt)
        assert (receipt.transfer_id, receipt.sha256) == ("t-transit", frames[0].sha256)
        assert receipt.at is not None
        lease = await store.lease_transfer(NEXT, time.time() + 1)
        assert lease is not None
        assert (lease.recipients, lease.document_id) == ((FAR,), "7/UBND")
        assert await store.read_package(lease.package_id) == data


async def test_stalled_transfer_is_dropped_by_the_timer_and_its_file_removed(
    tmp_path: Path,
) -> None:
    """A transfer whose neighbour sends nothing more is dropped by the sweep (no other frame
    needed) once idle past partial_ttl, and its file is removed."""
    now = [1000.0]
    receiver = _idle_receiver(tmp_path, partial_ttl=0.2, clock=lambda: now[0])
    first = split_into_frames("t-stall", "edoc", [FAR], b"s" * 5000, 1024)[0]
    await receiver.on_frame(None, PEER, encode_frame(first))  # type: ignore[arg-type]
    assert receiver.partial_transfers == 1
    assert len(list((tmp_path / "partial").iterdir())) == 1
    sweeping = asyncio.create_task(receiver.sweep())
    try:
        await asyncio.sleep(0.1)  # sweeps at the real time: nothing is stale yet
        assert receiver.partial_transfers == 1
        now[0] += 1.0
        async with asyncio.timeout(60):
            while receiver.partial_transfers:  # noqa: ASYNC110 - waits for the sweep
                await asyncio.sleep(0.02)
    finally:
        sweeping.cancel()
    assert not list((tmp_path / "partial").iterdir())


def test_partial_files_of_an_earlier_run_are_collected(tmp_path: Path) -> None:
    """Files of transfers a previous run was reassembling are removed at start."""
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "0123.part").write_bytes(b"half")
    receiver = _idle_receiver(tmp_path)
    assert receiver.collect_leftovers() == 1
    assert not list(partial.iterdir())


class _Outbox:
    """Stands for the link hop receipts go back over: records each frame published."""

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []

    async def publish(self, to: str, payload: bytes) -> None:
        self.published.append((to, payload))


def _passing_through(count: int) -> list[TransferFrame]:
    """``count`` one-frame packages for FAR, labelled as a sending node labels them (so the
    receiver passes them on unread, with nothing between their arrival and the store)."""
    return [
        split_into_frames(
            f"t-{i}", "edoc", [FAR], b"%d" % i * 300, 4096, document=f"{i}/UBND", origin=PEER
        )[0]
        for i in range(count)
    ]


async def _answers(tmp_path: Path, frames: list[TransferFrame], **settings: Any) -> list[bytes]:
    """The frames a receiver publishes back to PEER for ``frames`` arriving together."""
    outbox = _Outbox()
    async with SqliteStore(tmp_path / "state") as store:
        receiver = _receiver(
            store,
            tmp_path,
            transit=lambda recipients: {NEXT: tuple(recipients)},
            in_memory_max=16 * 1024,
            **settings,
        )
        for frame in frames:
            await receiver.on_frame(outbox, PEER, encode_frame(frame))  # type: ignore[arg-type]
        await receiver.drain()
        assert receiver.received == len(frames)
    assert {to for to, _ in outbox.published} == {PEER}
    return [payload for _, payload in outbox.published]


async def test_packages_stored_in_one_commit_are_answered_in_one_frame(tmp_path: Path) -> None:
    """Five packages from one neighbour that arrive together share a commit, and one
    ``receipts`` frame answers all five, each with its own digest."""
    frames = _passing_through(5)
    (payload,) = await _answers(tmp_path, frames)
    answer = decode_frame(payload)
    assert isinstance(answer, HopReceipts)
    assert [(r.transfer_id, r.sha256) for r in answer.receipts] == [
        (f.transfer_id, f.sha256) for f in frames
    ]


async def test_without_grouping_each_package_gets_a_receipt_frame(tmp_path: Path) -> None:
    """``transfer.group_receipts = false`` (a neighbour of an earlier release): the same five
    packages are answered with five plain ``receipt`` frames."""
    frames = _passing_through(5)
    answers = [decode_frame(p) for p in await _answers(tmp_path, frames, group_receipts=False)]
    assert all(isinstance(a, HopReceipt) for a in answers)
    assert sorted(a.transfer_id for a in answers) == sorted(f.transfer_id for f in frames)  # type: ignore[union-attr]


async def test_receipts_waiting_when_the_receiver_is_cancelled_are_not_sent(
    tmp_path: Path,
) -> None:
    """After cancel() (the drain ran out of time at shutdown) nothing more is published: the
    senders send those transfers again and are answered then."""
    outbox = _Outbox()
    async with SqliteStore(tmp_path / "state") as store:
        receiver = _receiver(store, tmp_path)
        receiver._answer_soon(outbox, PEER, "t-1", "a" * 64)  # type: ignore[arg-type]
        receiver.cancel()
        await asyncio.sleep(0)  # the answering callback runs, finds nothing
        await receiver.drain()
    assert outbox.published == []


async def test_a_receipts_frame_acknowledges_each_transfer_it_names(tmp_path: Path) -> None:
    """Three transfers in flight to a neighbour, answered in one ``receipts`` frame: each
    sender waiting is woken and each transfer is acknowledged in the store; a receipt in the
    same frame for a digest that was not sent wakes nobody and acknowledges nothing."""
    waiter = ReceiptWaiter()
    now = time.time()
    async with SqliteStore(tmp_path / "state") as store:
        leases = []
        for i in range(4):
            data = b"package %d" % i
            meta = PackageMeta.for_bytes(data, f"{i}/UBND", "edoc", PEER, (FAR,))
            package_id, _ = await store.put_package(data, meta, now)
            await store.enqueue(package_id, {PEER: (FAR,)}, now)
            lease = await store.lease_transfer(PEER, now)
            assert lease is not None
            leases.append(lease)
        waiting = [waiter.expect(lease.transfer_id, lease.package_id, PEER) for lease in leases]
        receiver = _receiver(store, tmp_path, receipts=waiter)
        group = [(lease.transfer_id, lease.package_id) for lease in leases[:3]]
        group.append((leases[3].transfer_id, "f" * 64))
        frame = encode_frame(receipt_frame(group, at=time.time()))
        await receiver.on_frame(None, PEER, frame)  # type: ignore[arg-type]
        await receiver.drain()
        assert [future.done() for future in waiting] == [True, True, True, False]
        states = [
            t.state for t in await store.open_transfers() if t.transfer_id == leases[3].transfer_id
        ]
        assert states == ["in_flight"]
        summary = await store.queue_summary(time.time())
    assert summary.transfers.get("acked") == 3
