"""A node and its neighbour, run as a process the fault test kills with SIGKILL.

``python -m tests.store_fault_harness DIR N`` submits packages 0..N-1 at node A, forwards
them to node B (a second SqliteStore that dedupes and answers with the hop receipt), delivers
them to B's inbox and retrieves them, resuming whatever a killed run left half done. It exits
0 and prints a JSON summary once every package is done at both ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import time
from pathlib import Path

from lienthong.config import RetrySettings, StoreSettings
from lienthong.store import (
    IllegalTransition,
    PackageMeta,
    PackageState,
    ReceiveOutcome,
    SqliteStore,
)

A, B, RECIPIENT = "000.00.00.H49", "000.00.00.H30", "000.00.12.H30"
SETTINGS = StoreSettings(
    lease_s=0.5,
    retry=RetrySettings(base_delay_s=0.05, max_delay_s=0.2, max_attempts=1000, max_age_s=3600),
)
WORKERS = 8
RECEIPT_LOSS = 0.05  # receipts lost in transit: the lease runs out and the transfer is resent


def package(i: int) -> tuple[bytes, PackageMeta]:
    """Package number ``i``: 5 KB, distinct bytes."""
    data = f"<edXML n='{i}'>".encode() + bytes(random.Random(i).randbytes(5000))
    return data, PackageMeta.for_bytes(data, f"doc-{i}", "edoc", A, [RECIPIENT])


async def route(a: SqliteStore, package_id: str) -> None:
    """Queue the stored package towards B (a restart may have done it already)."""
    with contextlib.suppress(IllegalTransition):
        await a.enqueue(package_id, {B: [RECIPIENT]}, time.time())


async def deliver(b: SqliteStore, package_id: str) -> None:
    """B verifies the package and puts it in the inbox."""
    await b.set_package_state(package_id, PackageState.VERIFIED, time.time())
    await b.inbox_add(package_id, [RECIPIENT], time.time())


async def run(root: Path, n: int) -> dict[str, int]:
    """Work until every package is done at A and retrieved at B."""
    async with SqliteStore(root / "a", SETTINGS) as a, SqliteStore(root / "b", SETTINGS) as b:
        for rec in await a.packages(PackageState.STORED):
            await route(a, rec.package_id)
        for rec in await b.packages(PackageState.STORED):
            await deliver(b, rec.package_id)
        for rec in await b.packages(PackageState.VERIFIED):
            await b.inbox_add(rec.package_id, [RECIPIENT], time.time())
        finished = asyncio.Event()

        async def submit(i: int) -> None:
            data, meta = package(i)
            pid, _ = await a.put_package(data, meta, time.time())
            if (await a.get_package(pid)).state == PackageState.STORED:
                await route(a, pid)

        async def ingest() -> None:
            for start in range(0, n, 50):
                await asyncio.gather(*(submit(i) for i in range(start, min(n, start + 50))))

        async def forward() -> None:
            while not finished.is_set():
                lease = await a.lease_transfer(None, time.time())
                if lease is None:
                    await asyncio.sleep(0.02)
                    continue
                data = await a.read_package(lease.package_id)
                meta = (await a.get_package(lease.package_id)).meta
                result = await b.receive(lease.transfer_id, data, meta, A, time.time())
                if result.outcome == ReceiveOutcome.NEW:
                    await deliver(b, result.package_id)
                if random.random() >= RECEIPT_LOSS:
                    await a.ack(lease.transfer_id, lease.sha256, time.time())

        async def office() -> None:
            while not finished.is_set():
                entries = await b.inbox_list(RECIPIENT)
                await asyncio.gather(*(b.inbox_ack(e.entry_id, True, time.time()) for e in entries))
                done_a = len(await a.packages(PackageState.DONE))
                done_b = len(await b.packages(PackageState.DONE))
                if done_a == n and done_b == n:
                    finished.set()
                await asyncio.sleep(0.05)

        await asyncio.gather(ingest(), office(), *(forward() for _ in range(WORKERS)))
        summary = await b.queue_summary(time.time())
        return {
            "done_a": len(await a.packages(PackageState.DONE)),
            "done_b": len(await b.packages(PackageState.DONE)),
            "duplicates": summary.duplicates_suppressed,
        }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(run(Path(sys.argv[1]), int(sys.argv[2])))), flush=True)
