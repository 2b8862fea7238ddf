"""Durable packages per second (5 KB each): grouped commits, one commit per package, and raw
sqlite3 inserts committed one by one (same pragmas, same disk) as the baseline.

Run: ``.venv/bin/python bench/bench_store.py [--packages N] [--dir DIR]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
from pathlib import Path

from lienthong.config import StoreSettings
from lienthong.store import PackageMeta, SqliteStore


def packages(n: int, salt: str) -> list[tuple[bytes, PackageMeta]]:
    """``n`` distinct 5 KB packages."""
    out = []
    for i in range(n):
        data = f"{salt}-{i}".encode().ljust(5120, b".")
        out.append((data, PackageMeta.for_bytes(data, f"doc-{i}", "edoc", "000.00.00.H49", ["x"])))
    return out


async def store_rate(root: Path, n: int, batch: int, concurrency: int) -> float:
    """Packages per second through put_package with ``concurrency`` callers at once."""
    settings = StoreSettings(group_commit_max_batch=batch, group_commit_max_wait_ms=0)
    work = packages(n, f"b{batch}")
    async with SqliteStore(root, settings) as store:
        start = time.perf_counter()
        for i in range(0, n, concurrency):
            await asyncio.gather(
                *(store.put_package(d, m, 0.0) for d, m in work[i : i + concurrency])
            )
        return n / (time.perf_counter() - start)


def raw_rate(path: Path, n: int) -> float:
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
    return rate


def main() -> None:
    """Run the three measurements and print a table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--packages", type=int, default=1000)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where to write (default: a temp dir)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        root = Path(tmp)
        rows = [
            ("sqlite3 raw, commit per insert (baseline)", raw_rate(root / "raw.db", args.packages)),
            (
                "SqliteStore, commit per package (batch 1)",
                asyncio.run(store_rate(root / "single", args.packages, 1, 64)),
            ),
            (
                "SqliteStore, grouped commits (64 callers)",
                asyncio.run(store_rate(root / "grouped", args.packages, 256, 64)),
            ),
        ]
    print(f"{'mode':<45} {'packages/s':>12}")
    for name, rate in rows:
        print(f"{name:<45} {rate:>12.0f}")


if __name__ == "__main__":
    main()
