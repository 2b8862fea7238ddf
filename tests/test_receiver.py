"""The receiver bounds what a neighbour can leave half-sent."""

from __future__ import annotations

from lienthong.metrics import Metrics
from lienthong.store import MemoryStore
from lienthong.transport.frames import encode_frame, split_into_frames
from lienthong.transport.receiver import MAX_PARTIAL_PER_PEER, Receiver
from lienthong.transport.sender import ReceiptWaiter

PEER = "000.00.00.G22"


async def _nothing(package_id: str) -> None:
    raise AssertionError(f"no package should complete, got {package_id}")


async def test_unfinished_transfers_per_peer_are_capped() -> None:
    """A neighbour that starts many transfers and finishes none holds at most the cap."""
    receiver = Receiver(
        store=MemoryStore(),
        receipts=ReceiptWaiter(),
        on_package=_nothing,
        max_package_bytes=1 << 20,
        metrics=Metrics(),
    )
    for i in range(MAX_PARTIAL_PER_PEER + 10):
        data = bytes([i]) * 5000
        first = split_into_frames(f"t{i:04d}", "edoc", ["000.00.00.H49"], data, 1024)[0]
        await receiver.on_frame(None, PEER, encode_frame(first))  # type: ignore[arg-type]
    assert receiver.partial_transfers == MAX_PARTIAL_PER_PEER
