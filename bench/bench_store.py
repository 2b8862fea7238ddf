"""Durable packages per second (5 KB each): grouped commits with the packages inline in their
rows (the default for packages this small), grouped commits with every package in a file
(per-file fdatasync and one fsync per folder per batch), one commit per package, and raw sqlite3
inserts committed one by one (same pragmas, same disk) as the baseline. The same on PostgreSQL
(the server of ``LIENTHONG_TEST_PG``, a new database per run): PostgresStore grouped and one
commit per package, against raw asyncpg inserts committed one by one.

The transit cycle: what a transit node's store does per transfer (``receive`` of a package from
a neighbour, stored and routed in one operation; ``lease_transfer``; ``ack_many`` of its hop
receipt), 16 transfers at a time (``--transit-at-once``), on both engines.

Each mode runs ``--rounds`` times, interleaved, and the median is printed (the disk is shared).
"packages/flush" is how many packages shared one commit (files: one flush of their folder);
"CPU ms" is this process's CPU time (all its threads) per package, or per transfer.

Run: ``.venv/bin/python bench/bench_store.py [--packages N] [--rounds R] [--dir DIR]``
(``--no-postgresql`` leaves PostgreSQL out).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from dataclasses import replace
from pathlib import Path

import asyncpg

from lienthong.config import StoreSettings
from lienthong.devnet.pgdb import ScratchDatabase
from lienthong.store import PackageMeta, SqliteStore
from lienthong.store.postgres import PostgresStore
from lienthong.store.sqlstore import SqlStore

CALLERS = 64
TRANSIT_AT_ONCE = 16
SENDER, NEXT_HOP, RECIPIENT = "000.00.00.H49", "000.00.00.H41", "000.00.07.H41"

Result = tuple[float, float, float]
"""Packages (or transfers) per second, packages per flush, CPU milliseconds per package."""


def packages(n: int, salt: str) -> list[tuple[bytes, PackageMeta]]:
    """``n`` distinct 5 KB packages."""
    out = []
    for i in range(n):
        data = f"{salt}-{i}".encode().ljust(5120, b".")
        out.append((data, PackageMeta.for_bytes(data, f"doc-{i}", "edoc", "000.00.00.H49", ["x"])))
    return out


async def store_rate(
    root: Path, n: int, batch: int, inline: bool, dsn: str | None = None
) -> Result:
    """Packages per second through put_package with 64 callers at once; packages per commit
    (on PostgreSQL at ``dsn`` when given, else SQLite under ``root``)."""
    settings = StoreSettings(
        group_commit_max_batch=batch,
        group_commit_max_wait_ms=0,
        inline_max_bytes=StoreSettings().inline_max_bytes if inline else 0,
    )
    store: SqlStore = SqliteStore(root, settings)
    if dsn is not None:
        store = PostgresStore(root, replace(settings, backend="postgresql", dsn=dsn))
    work = packages(n, root.name)
    callers = asyncio.Semaphore(CALLERS)
    async with store:

        async def put(data: bytes, meta: PackageMeta) -> None:
            async with callers:
                await store.put_package(data, meta, 0.0)

        start, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(put(d, m) for d, m in work))
        rate = n / (time.perf_counter() - start)
        cpu_ms = (time.process_time() - cpu) * 1000 / n
        flushes = store.blobs.flushes if isinstance(store, SqliteStore) and not inline else 0
        return rate, n / (flushes or store.commits), cpu_ms


async def transit_cycle(root: Path, n: int, at_once: int, dsn: str | None = None) -> Result:
    """Transfers per second through a transit node's store operations, ``at_once`` at a time
    (received and routed, taken, acknowledged); transfers per commit; CPU ms each."""
    settings = StoreSettings()
    store: SqlStore = SqliteStore(root, settings)
    if dsn is not None:
        store = PostgresStore(root, replace(settings, backend="postgresql", dsn=dsn))
    work = packages(n, root.name)
    hops = {NEXT_HOP: (RECIPIENT,)}
    async with store:

        async def receive(data: bytes, meta: PackageMeta) -> None:
            await store.receive(uuid.uuid4().hex, data, meta, SENDER, time.time(), hops=hops)

        async def take_and_ack() -> None:
            lease = await store.lease_transfer(NEXT_HOP, time.time())
            assert lease is not None
            await store.ack_many([(lease.transfer_id, lease.sha256)], time.time(), by=NEXT_HOP)

        start, cpu = time.perf_counter(), time.process_time()
        for first in range(0, n, at_once):
            group = work[first : first + at_once]
            await asyncio.gather(*(receive(d, m) for d, m in group))
            await asyncio.gather(*(take_and_ack() for _ in group))
        rate = n / (time.perf_counter() - start)
        return rate, n / store.commits, (time.process_time() - cpu) * 1000 / n


async def pg_store_rate(root: Path, n: int, batch: int) -> Result:
    """:func:`store_rate` on PostgreSQL, in a database made for the run."""
    async with ScratchDatabase("lienthong_bench") as db:
        return await store_rate(root, n, batch, True, db.dsn)


async def pg_transit_cycle(root: Path, n: int, at_once: int) -> Result:
    """:func:`transit_cycle` on PostgreSQL, in a database made for the run."""
    async with ScratchDatabase("lienthong_bench") as db:
        return await transit_cycle(root, n, at_once, db.dsn)


async def pg_raw_rate(n: int) -> Result:
    """asyncpg inserts of 5 KB rows, each committed alone (the server's default durability)."""
    async with ScratchDatabase("lienthong_bench") as db:
        conn = await asyncpg.connect(db.dsn)
        try:
            await conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, data bytea)")
            blob = os.urandom(5120)
            start, cpu = time.perf_counter(), time.process_time()
            for _ in range(n):
                async with conn.transaction():
                    await conn.execute("INSERT INTO t (data) VALUES ($1)", blob)
            rate = n / (time.perf_counter() - start)
            cpu_ms = (time.process_time() - cpu) * 1000 / n
        finally:
            await conn.close()
    return rate, 1.0, cpu_ms


def raw_rate(path: Path, n: int) -> Result:
    """sqlite3 inserts of 5 KB rows, each committed alone (WAL, synchronous=FULL)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB)")
    blob = os.urandom(5120)
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        db.execute("BEGIN")
        db.execute("INSERT INTO t (data) VALUES (?)", (blob,))
        db.execute("COMMIT")
    rate = n / (time.perf_counter() - start)
    cpu_ms = (time.process_time() - cpu) * 1000 / n
    db.close()
    return rate, 1.0, cpu_ms


def main() -> None:
    """Run the measurements, interleaved, and print a table of medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir)"
    )
    parser.add_argument("--no-postgresql", action="store_true", help="SQLite only")
    parser.add_argument(
        "--transit-at-once",
        type=int,
        default=TRANSIT_AT_ONCE,
        help=f"transfers at a time in the transit cycle ({TRANSIT_AT_ONCE})",
    )
    args = parser.parse_args()
    n = args.packages
    modes = {
        "sqlite3 raw, commit per insert (baseline)": lambda d: raw_rate(d / "raw.db", n),
        "SqliteStore, commit per package (batch 1)": lambda d: asyncio.run(
            store_rate(d / "single", n, 1, True)
        ),
        "SqliteStore, grouped, inline in the row": lambda d: asyncio.run(
            store_rate(d / "inline", n, 256, True)
        ),
        "SqliteStore, grouped, files, fdatasync": lambda d: asyncio.run(
            store_rate(d / "fdatasync", n, 256, False)
        ),
        "SqliteStore, transit cycle (per transfer)": lambda d: asyncio.run(
            transit_cycle(d / "transit", n, args.transit_at_once)
        ),
    }
    if not args.no_postgresql:
        modes |= {
            "asyncpg raw, commit per insert (baseline)": lambda d: asyncio.run(pg_raw_rate(n)),
            "PostgresStore, commit per package (batch 1)": lambda d: asyncio.run(
                pg_store_rate(d / "pg-single", n, 1)
            ),
            "PostgresStore, grouped, in the row": lambda d: asyncio.run(
                pg_store_rate(d / "pg-grouped", n, 256)
            ),
            "PostgresStore, transit cycle (per transfer)": lambda d: asyncio.run(
                pg_transit_cycle(d / "pg-transit", n, args.transit_at_once)
            ),
        }
    results: dict[str, list[Result]] = {name: [] for name in modes}
    for _ in range(args.rounds):
        for name, run in modes.items():
            with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                results[name].append(run(Path(tmp)))
    print(f"{'mode':<45} {'packages/s':>12} {'packages/flush':>15} {'CPU ms':>8}")
    for name, runs in results.items():
        rate = statistics.median(r for r, _, _ in runs)
        per_flush = statistics.median(f for _, f, _ in runs)
        cpu_ms = statistics.median(c for _, _, c in runs)
        print(f"{name:<45} {rate:>12.0f} {per_flush:>15.1f} {cpu_ms:>8.3f}")


if __name__ == "__main__":
    main()
