"""Durable packages per second (5 KB each): grouped commits with the packages inline in their
rows (the default for packages this small), grouped commits with every package in a file
(per-file fdatasync and one fsync per folder per batch), one commit per package, and raw sqlite3
inserts committed one by one (same pragmas, same disk) as the baseline. The same on PostgreSQL
(the server of ``LIENTHONG_TEST_PG``, a new database per run): PostgresStore grouped and one
commit per package, against raw asyncpg inserts committed one by one.

Each mode runs ``--rounds`` times, interleaved, and the median is printed (the disk is shared).
"packages/flush" is how many packages shared one commit (files: one flush of their folder).

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
from dataclasses import replace
from pathlib import Path

import asyncpg

from lienthong.config import StoreSettings
from lienthong.devnet.pgdb import ScratchDatabase
from lienthong.store import PackageMeta, SqliteStore
from lienthong.store.postgres import PostgresStore
from lienthong.store.sqlstore import SqlStore

CALLERS = 64


def packages(n: int, salt: str) -> list[tuple[bytes, PackageMeta]]:
    """``n`` distinct 5 KB packages."""
    out = []
    for i in range(n):
        data = f"{salt}-{i}".encode().ljust(5120, b".")
        out.append((data, PackageMeta.for_bytes(data, f"doc-{i}", "edoc", "000.00.00.H49", ["x"])))
    return out


async def store_rate(
    root: Path, n: int, batch: int, inline: bool, dsn: str | None = None
) -> tuple[float, float]:
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

        start = time.perf_counter()
        await asyncio.gather(*(put(d, m) for d, m in work))
        rate = n / (time.perf_counter() - start)
        flushes = store.blobs.flushes if isinstance(store, SqliteStore) and not inline else 0
        return rate, n / (flushes or store.commits)


async def pg_store_rate(root: Path, n: int, batch: int) -> tuple[float, float]:
    """:func:`store_rate` on PostgreSQL, in a database made for the run."""
    async with ScratchDatabase("lienthong_bench") as db:
        return await store_rate(root, n, batch, True, db.dsn)


async def pg_raw_rate(n: int) -> tuple[float, float]:
    """asyncpg inserts of 5 KB rows, each committed alone (the server's default durability)."""
    async with ScratchDatabase("lienthong_bench") as db:
        conn = await asyncpg.connect(db.dsn)
        try:
            await conn.execute("CREATE TABLE t (id bigserial PRIMARY KEY, data bytea)")
            blob = os.urandom(5120)
            start = time.perf_counter()
            for _ in range(n):
                async with conn.transaction():
                    await conn.execute("INSERT INTO t (data) VALUES ($1)", blob)
            rate = n / (time.perf_counter() - start)
        finally:
            await conn.close()
    return rate, 1.0


def raw_rate(path: Path, n: int) -> tuple[float, float]:
    """sqlite3 inserts of 5 KB rows, each committed alone (WAL, synchronous=FULL)."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, data BLOB)")
    blob = os.urandom(5120)
    start = time.perf_counter()
    for _ in range(n):
        db.execute("BEGIN")
        db.execute("INSERT INTO t (data) VALUES (?)", (blob,))
        db.execute("COMMIT")
    rate = n / (time.perf_counter() - start)
    db.close()
    return rate, 1.0


def main() -> None:
    """Run the measurements, interleaved, and print a table of medians."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir)"
    )
    parser.add_argument("--no-postgresql", action="store_true", help="SQLite only")
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
        }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in modes}
    for _ in range(args.rounds):
        for name, run in modes.items():
            with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
                results[name].append(run(Path(tmp)))
    print(f"{'mode':<45} {'packages/s':>12} {'packages/flush':>15}")
    for name, runs in results.items():
        rate = statistics.median(r for r, _ in runs)
        per_flush = statistics.median(f for _, f in runs)
        print(f"{name:<45} {rate:>12.0f} {per_flush:>15.1f}")


if __name__ == "__main__":
    main()
