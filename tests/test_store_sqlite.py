"""What only the SQLite store can show: real disk full, a locked database, tampering, the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import sqlite3
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from lienthong.cli import main
from lienthong.config import StoreSettings
from lienthong.store import (
    CorruptPackage,
    DatabaseLocked,
    DiskFull,
    IntakeBlocked,
    PackageMeta,
    PackageState,
    Receipt,
    SqliteStore,
    StoreTransientError,
)
from lienthong.store import sqlite as sqlite_engine
from lienthong.store.blobs import BlobDir

T0 = 1_700_000_000.0


def pkg(n: int, size: int = 200) -> tuple[bytes, PackageMeta]:
    """A package of ``size`` bytes."""
    data = f"<edXML n='{n}'>".encode().ljust(size, b" ")
    return data, PackageMeta.for_bytes(data, f"doc-{n}", "edoc", "000.00.00.H49", ["x"])


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, unmounted afterwards."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def test_disk_full_stops_intake_and_keeps_what_is_stored(tiny_disk: Path) -> None:
    """A full disk raises DiskFull naming the cause, stops intake, and damages nothing stored."""
    store = SqliteStore(tiny_disk / "state")
    stored = []
    async with store:
        with pytest.raises(DiskFull, match="disk full while writing package blob") as info:  # noqa: PT012 - fill until full
            for n in range(100):
                data, meta = pkg(n, 64 * 1024)
                await store.put_package(data, meta, T0)
                stored.append((data, meta.sha256))
        assert store.intake_blocked == str(info.value)
        data, meta = pkg(999)
        with pytest.raises(IntakeBlocked, match="disk full"):
            await store.put_package(data, meta, T0)
        assert stored, "some packages fit before the disk filled"
        for data, pid in stored:
            assert await store.read_package(pid) == data
        assert (await store.journal_verify()).ok
        assert not list((tiny_disk / "state" / "packages").rglob(".*.tmp"))
    db = sqlite3.connect(tiny_disk / "state" / "store.sqlite3")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert db.execute("SELECT count(*) FROM packages").fetchone() == (len(stored),)


async def test_failed_file_batch_fails_its_packages_only(tiny_disk: Path) -> None:
    """Package files that do not fit fail their puts, leave no file or row; the rest commits."""
    settings = StoreSettings(group_commit_max_batch=5, group_commit_max_wait_ms=5000)
    async with SqliteStore(tiny_disk / "state", settings) as store:
        free = shutil.disk_usage(tiny_disk).free
        (tiny_disk / "filler").write_bytes(b"\0" * (free - 160 * 1024))
        work = [pkg(n, 64 * 1024) for n in range(4)]
        results = await asyncio.gather(
            *(store.put_package(data, meta, T0) for data, meta in work),
            store.record_receipt(Receipt("doc-1", "status", "02", "x", T0)),
            return_exceptions=True,
        )
        assert all(isinstance(r, DiskFull) for r in results[:4]), results
        assert results[4] is None
        assert store.intake_blocked is not None
        assert [r.code for r in await store.receipts("doc-1")] == ["02"]
        assert (await store.queue_summary(T0)).packages == {}
        assert not [p for p in (tiny_disk / "state" / "packages").rglob("*") if p.is_file()]
        assert (await store.journal_verify()).ok


def test_file_batch_is_flushed_once(tmp_path: Path) -> None:
    """A batch of package files is written under their digests and made durable together."""
    blobs = BlobDir(tmp_path / "packages")
    batch = {meta.sha256: data for data, meta in (pkg(n) for n in range(40))}
    blobs.write_batch(batch)
    assert blobs.flushes == 1
    assert all(blobs.read(sha) == data for sha, data in batch.items())
    assert not list(tmp_path.rglob(".*.tmp"))


async def test_small_packages_live_in_their_row_large_ones_in_a_file(tmp_path: Path) -> None:
    """A package under ``inline_max_bytes`` gets no file; one at the limit or above does, and
    both read back the same after reopening."""
    settings = StoreSettings(inline_max_bytes=1000)
    small, small_meta = pkg(1, 999)
    large, large_meta = pkg(2, 1000)
    async with SqliteStore(tmp_path, settings) as store:
        await store.put_package(small, small_meta, T0)
        await store.put_package(large, large_meta, T0)
        assert not store.blobs.path(small_meta.sha256).exists()
        assert store.blobs.path(large_meta.sha256).read_bytes() == large
    async with SqliteStore(tmp_path, settings) as store:
        assert await store.read_package(small_meta.sha256) == small
        assert await store.read_package(large_meta.sha256) == large


async def test_receive_with_hops_stores_and_routes_in_one_commit(tmp_path: Path) -> None:
    """A package passing through is stored, routed and its transfer queued by one receive:
    the journal shows every step, and a repeat of the transfer queues nothing more."""
    data, meta = pkg(1)
    hops = {"000.00.00.G22": ("000.03.07.H41",)}
    async with SqliteStore(tmp_path) as store:
        first = await store.receive("t1", data, meta, "000.00.05.H49", T0, hops=hops)
        again = await store.receive("t1", data, meta, "000.00.05.H49", T0 + 1, hops=hops)
        assert (first.outcome, again.outcome) == ("new", "duplicate")
        assert (await store.get_package(meta.sha256)).state == PackageState.ROUTED
        summary = await store.queue_summary(T0)
        assert summary.per_hop == {"000.00.00.G22": {"queued": 1}}
        lease = await store.lease_transfer("000.00.00.G22", T0)
        assert lease is not None
        assert lease.recipients == ("000.03.07.H41",)
        assert (lease.document_id, lease.sender) == (meta.document_id, meta.sender)
        assert (await store.journal_verify()).ok
    db = sqlite3.connect(tmp_path / "store.sqlite3")
    steps = db.execute("SELECT entity, to_state FROM journal ORDER BY seq").fetchall()
    assert steps == [
        ("package", "stored"),
        ("package", "routed"),
        ("transfer", "queued"),
        ("transfer", "in_flight"),
    ]


async def test_concurrent_puts_share_one_flush(tmp_path: Path) -> None:
    """Packages arriving together are made durable by one flush and one commit."""
    settings = StoreSettings(
        group_commit_max_batch=20, group_commit_max_wait_ms=5000, inline_max_bytes=0
    )
    work = [pkg(n) for n in range(20)]
    async with SqliteStore(tmp_path, settings) as store:
        await asyncio.gather(*(store.put_package(data, meta, T0) for data, meta in work))
        assert store.blobs.flushes == 1
    async with SqliteStore(tmp_path) as store:
        for data, meta in work:
            assert await store.read_package(meta.sha256) == data


async def test_file_left_without_row_is_rewritten(tmp_path: Path) -> None:
    """A file under a package's name that no row refers to (a crash's orphan) is not trusted."""
    data, meta = pkg(1)
    async with SqliteStore(tmp_path, StoreSettings(inline_max_bytes=0)) as store:
        orphan = store.blobs.path(meta.sha256)
        orphan.parent.mkdir(parents=True)
        orphan.write_bytes(data[:10])
        assert await store.put_package(data, meta, T0) == (meta.sha256, False)
        assert await store.read_package(meta.sha256) == data


async def test_locked_database_is_a_clear_transient_error(tmp_path: Path) -> None:
    """A database held elsewhere fails with "database is locked after ..." and blocks intake."""
    async with SqliteStore(tmp_path, StoreSettings(busy_timeout_ms=100)) as store:
        other = sqlite3.connect(tmp_path / "store.sqlite3", isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        data, meta = pkg(1)
        with pytest.raises(DatabaseLocked, match=r"database is locked after 0.1 s"):
            await store.put_package(data, meta, T0)
        assert store.intake_blocked is not None
        assert "locked" in store.intake_blocked
        with pytest.raises(IntakeBlocked):
            await store.put_package(data, meta, T0)
        other.execute("ROLLBACK")
        assert await store.resume_intake() is True
        assert await store.put_package(data, meta, T0) == (meta.sha256, False)


async def test_a_lock_held_elsewhere_is_waited_for_off_the_event_loop(tmp_path: Path) -> None:
    """A write that finds the database locked by another process waits in the writer thread:
    the event loop goes on (here it is what releases the lock) and the write then lands."""
    async with SqliteStore(tmp_path, StoreSettings(busy_timeout_ms=30_000)) as store:
        other = sqlite3.connect(tmp_path / "store.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        data, meta = pkg(1)
        loop = asyncio.get_running_loop()
        before = loop.time()
        writing = asyncio.create_task(store.put_package(data, meta, T0))
        await asyncio.sleep(0.2)
        # Far below the 30 s a loop stuck in the lock's wait would have taken.
        assert loop.time() - before < 10
        assert not writing.done()
        other.execute("ROLLBACK")
        assert await writing == (meta.sha256, False)
        assert store.intake_blocked is None
        other.close()


@pytest.mark.parametrize("disk", ["fast", "slow"])
async def test_durable_writes_flush_the_log_before_returning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, disk: str
) -> None:
    """A write someone is promised returns only after the WAL is flushed to disk (on the event
    loop while flushes are quick, in the flush thread once they are not); bookkeeping that
    may be lost (taking a transfer, a hop receipt) does not flush it by itself."""
    flushed: list[tuple[str, str]] = []
    real = os.fdatasync

    def fdatasync(fd: int) -> None:
        real(fd)
        flushed.append((os.readlink(f"/proc/self/fd/{fd}"), threading.current_thread().name))

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    monkeypatch.setattr(sqlite_engine, "INLINE_FLUSH_S", 60.0 if disk == "fast" else 0.0)
    wal = str(tmp_path / "store.sqlite3-wal")
    where = "MainThread" if disk == "fast" else "store-flush_0"
    async with SqliteStore(tmp_path) as store:
        data, meta = pkg(1)
        await store.put_package(data, meta, T0)
        assert flushed == [(wal, where)]
        (tid,) = await store.enqueue(meta.sha256, {"000.00.00.G22": ["x"]}, T0)
        assert flushed == [(wal, where)] * 2
        lease = await store.lease_transfer(None, T0)
        assert lease is not None
        assert lease.transfer_id == tid
        assert await store.ack(tid, meta.sha256, T0 + 1) is True
        assert flushed == [(wal, where)] * 2
    async with SqliteStore(tmp_path) as store:
        assert (await store.get_package(meta.sha256)).state == PackageState.DONE


async def test_a_log_that_cannot_be_flushed_stops_every_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed flush of the WAL fails the writes waiting for it with an error naming the
    cause, and nothing more is written (the system reports such an error once: no later
    flush could vouch for those rows), nor does intake resume, until a restart."""
    async with SqliteStore(tmp_path) as store:
        data, meta = pkg(1)
        await store.put_package(data, meta, T0)
        real = os.fdatasync

        def failing(fd: int) -> None:
            if os.readlink(f"/proc/self/fd/{fd}").endswith("-wal"):
                raise OSError(errno.EIO, "Input/output error")
            real(fd)

        monkeypatch.setattr(os, "fdatasync", failing)
        other, other_meta = pkg(2)
        with pytest.raises(StoreTransientError, match=r"could not be flushed.*Input/output"):
            await store.put_package(other, other_meta, T0)
        monkeypatch.setattr(os, "fdatasync", real)
        assert store.intake_blocked is not None
        assert "check the disk" in store.intake_blocked
        assert await store.resume_intake() is False
        with pytest.raises(StoreTransientError, match="until its daemon is restarted"):
            await store.set_package_state(meta.sha256, PackageState.DONE, T0 + 1)
    async with SqliteStore(tmp_path) as store:
        assert await store.put_package(other, other_meta, T0) == (other_meta.sha256, True)


async def test_the_log_is_copied_into_the_database_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer's own checkpoints (inside a COMMIT, on the loop) are off; the flush thread
    copies the WAL into the database file instead: the database file alone then holds what
    was committed."""
    monkeypatch.setattr(sqlite_engine, "CHECKPOINT_EVERY_S", 0.0)
    async with SqliteStore(tmp_path) as store:
        data, meta = pkg(1)
        await store.put_package(data, meta, T0)
        copy = tmp_path / "copy"
        copy.mkdir()
        found = None
        for n in range(2, 100):
            # Each commit starts a checkpoint unless one is still running (in its thread).
            await store.put_package(*pkg(n), T0)
            shutil.copy(tmp_path / "store.sqlite3", copy / "store.sqlite3")
            alone = sqlite3.connect(copy / "store.sqlite3")
            with contextlib.suppress(sqlite3.OperationalError):  # no table yet: not copied
                found = alone.execute(
                    "SELECT state FROM packages WHERE package_id = ?", (meta.sha256,)
                ).fetchone()
            alone.close()
            if found is not None:
                break
            await asyncio.sleep(0.05)
        assert found == (PackageState.STORED.value,)


async def test_bookkeeping_waits_to_share_the_next_durable_commit(tmp_path: Path) -> None:
    """A hop receipt (bookkeeping, promised to no one) waits for company: the next package
    stored commits it in the same transaction, at once."""
    async with SqliteStore(tmp_path, StoreSettings(bookkeeping_wait_ms=600_000)) as store:
        data, meta = pkg(1)
        await store.put_package(data, meta, T0)
        (tid,) = await store.enqueue(meta.sha256, {"000.00.00.G22": ["x"]}, T0)
        lease = await store.lease_transfer(None, T0)
        assert lease is not None
        commits = store.commits
        acking = asyncio.create_task(store.ack(tid, meta.sha256, T0 + 1))
        await asyncio.sleep(0.1)
        assert not acking.done()
        other, other_meta = pkg(2)
        assert await store.put_package(other, other_meta, T0 + 2) == (other_meta.sha256, False)
        assert await acking is True
        assert store.commits == commits + 1
        assert (await store.get_package(meta.sha256)).state == PackageState.DONE


async def test_bookkeeping_alone_commits_after_its_wait(tmp_path: Path) -> None:
    """With nothing else to write, a hop receipt commits once its wait is over."""
    async with SqliteStore(tmp_path, StoreSettings(bookkeeping_wait_ms=50)) as store:
        data, meta = pkg(1)
        await store.put_package(data, meta, T0)
        (tid,) = await store.enqueue(meta.sha256, {"000.00.00.G22": ["x"]}, T0)
        assert await store.lease_transfer(None, T0) is not None
        assert await store.ack(tid, meta.sha256, T0 + 1) is True
        assert (await store.get_package(meta.sha256)).state == PackageState.DONE


async def test_packages_survive_reopen(tmp_path: Path) -> None:
    """What a call acknowledged is there after closing and opening again."""
    data, meta = pkg(1)
    async with SqliteStore(tmp_path) as store:
        await store.put_package(data, meta, T0)
    async with SqliteStore(tmp_path) as store:
        assert (await store.get_package(meta.sha256)).state == PackageState.STORED
        assert await store.read_package(meta.sha256) == data


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database from a newer version is not opened (nor downgraded)."""
    async with SqliteStore(tmp_path):
        pass
    sqlite3.connect(tmp_path / "store.sqlite3").execute("PRAGMA user_version = 99")
    with pytest.raises(StoreTransientError, match="schema version 99 is newer"):
        await SqliteStore(tmp_path).open()


async def journal_of_three(tmp_path: Path) -> sqlite3.Connection:
    """A store whose journal holds a few entries; a raw connection to tamper with it."""
    async with SqliteStore(tmp_path) as store:
        for n in range(3):
            data, meta = pkg(n)
            await store.put_package(data, meta, T0 + n)
    return sqlite3.connect(tmp_path / "store.sqlite3", isolation_level=None)


async def verify(tmp_path: Path) -> tuple[bool, str | None]:
    """The journal check of the store at ``tmp_path``."""
    async with SqliteStore(tmp_path) as store:
        report = await store.journal_verify()
    return report.ok, report.problem


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        ("UPDATE journal SET detail = 'forged' WHERE seq = 2", "entry 2 changed"),
        ("DELETE FROM journal WHERE seq = 2", "entries 2..2 removed"),
        ("DELETE FROM journal WHERE seq = 3", "head records entry 3"),
        (
            "UPDATE journal SET seq = -seq WHERE seq IN (1, 2);"
            "UPDATE journal SET seq = 2 WHERE seq = -1; UPDATE journal SET seq = 1 WHERE seq = -2",
            "entry 1 changed",
        ),
    ],
    ids=["changed", "removed", "truncated", "reordered"],
)
async def test_journal_verify_names_the_tampered_entry(
    tmp_path: Path, tamper: str, expected: str
) -> None:
    """Changing, removing or reordering journal rows is detected and the entry named."""
    db = await journal_of_three(tmp_path)
    assert await verify(tmp_path) == (True, None)
    db.executescript(tamper)
    ok, problem = await verify(tmp_path)
    assert not ok
    assert problem is not None
    assert expected in problem


def write_config(tmp_path: Path) -> Path:
    """A daemon config whose state_dir is ``tmp_path/state``."""
    path = tmp_path / "lienthong.toml"
    path.write_text(f'[node]\ncode = "000.00.00.H49"\nstate_dir = "{tmp_path / "state"}"\n')
    return path


async def expired_transfer(state: Path) -> str:
    """A store with one package expired along with its transfer; the transfer id."""
    async with SqliteStore(state, StoreSettings(package_max_age_s=10)) as store:
        data, meta = pkg(1)
        await store.put_package(data, meta, T0)
        (tid,) = await store.enqueue(meta.sha256, {"000.00.00.H30": ["x"]}, T0)
        await store.expire(T0 + 11)
    return tid


def test_cli_queue_requeue_and_journal_verify(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """queue shows counts and dead letters, requeue revives them, journal verify checks."""
    config = write_config(tmp_path)
    tid = asyncio.run(expired_transfer(tmp_path / "state"))
    cfg = ["--config", str(config)]
    assert main(["queue", *cfg]) == 0
    assert "dead 1" in capsys.readouterr().out
    assert main(["queue", "--dead", *cfg]) == 0
    out = capsys.readouterr().out
    assert tid in out
    assert "package expired" in out
    assert main(["requeue", "--all-dead", *cfg]) == 0
    assert "requeued 1" in capsys.readouterr().out  # the transfer; its package comes back with it
    assert main(["queue", *cfg]) == 0
    assert "packages:  routed 1" in capsys.readouterr().out
    assert main(["journal", "verify", *cfg]) == 0
    assert "journal ok" in capsys.readouterr().out
    sqlite3.connect(tmp_path / "state" / "store.sqlite3").execute(
        "UPDATE journal SET to_state = 'done' WHERE seq = 1"
    ).connection.commit()
    assert main(["journal", "verify", *cfg]) == 1
    assert "entry 1 changed" in capsys.readouterr().out


def test_cli_without_database_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The commands refuse a state directory with no database instead of creating one."""
    assert main(["queue", "--config", str(write_config(tmp_path))]) == 1
    assert "no store database" in capsys.readouterr().err


async def test_intake_resumes_by_itself_once_the_disk_has_room(tiny_disk: Path) -> None:
    """After a full disk stopped intake, freeing space lets packages in again without anyone
    probing the store (no health check, no operator)."""
    async with SqliteStore(tiny_disk / "state", StoreSettings(intake_retry_s=0.1)) as store:
        free = shutil.disk_usage(tiny_disk).free
        filler = tiny_disk / "filler"
        filler.write_bytes(b"\0" * (free - 16 * 1024))
        data, meta = pkg(1, 64 * 1024)
        with pytest.raises(DiskFull):
            await store.put_package(data, meta, T0)
        assert store.intake_blocked is not None
        filler.unlink()
        async with asyncio.timeout(60):
            while store.intake_blocked is not None:  # noqa: ASYNC110 - polls state the code under test owns
                await asyncio.sleep(0.05)
        assert await store.put_package(data, meta, T0) == (meta.sha256, False)


async def test_taking_a_transfer_waits_for_no_commit(tmp_path: Path) -> None:
    """A transfer is taken while another process holds the write lock (a commit would wait for
    it); its move to in flight lands once the lock is gone, before the hop receipt's record."""
    data, meta = pkg(1)
    async with SqliteStore(tmp_path, StoreSettings(busy_timeout_ms=600_000)) as store:
        pid, _ = await store.put_package(data, meta, T0)
        (tid,) = await store.enqueue(pid, {"000.00.00.G22": ["x"]}, T0)
        other = sqlite3.connect(tmp_path / "store.sqlite3", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            async with asyncio.timeout(300):
                lease = await store.lease_transfer("000.00.00.G22", T0)
        finally:
            other.execute("ROLLBACK")
        assert lease is not None
        assert lease.transfer_id == tid
        assert await store.ack(tid, lease.sha256, T0 + 1) is True
        assert (await store.get_package(pid)).state == PackageState.DONE
        assert (await store.journal_verify()).ok
    db = sqlite3.connect(tmp_path / "store.sqlite3")
    moves = db.execute(
        "SELECT from_state, to_state FROM journal WHERE entity = 'transfer' ORDER BY seq"
    ).fetchall()
    assert moves == [(None, "queued"), ("queued", "in_flight"), ("in_flight", "acked")]


async def test_package_in_a_file_is_adopted_not_copied(tmp_path: Path) -> None:
    """A package handed over as a file is renamed into the package folder (same inode), the
    store names that file for reading in pieces, and a small one still lives in its row."""
    settings = StoreSettings(inline_max_bytes=1000)
    large, meta = pkg(1, 5000)
    small, small_meta = pkg(2, 10)
    given = tmp_path / "incoming"
    given.write_bytes(large)
    inode = given.stat().st_ino
    tiny = tmp_path / "tiny"
    tiny.write_bytes(small)
    async with SqliteStore(tmp_path / "state", settings) as store:
        await store.receive("t-1", given, meta, "000.00.00.G22", T0)
        await store.put_package(tiny, small_meta, T0)
        path = await store.package_file(meta.sha256)
        assert path is not None
        assert not given.exists()
        assert (path.stat().st_ino, path.read_bytes()) == (inode, large)
        assert await store.read_package(small_meta.sha256) == small
    async with SqliteStore(tmp_path / "state", settings) as store:
        assert await store.package_file(small_meta.sha256) is None


async def test_files_without_a_row_are_collected(tmp_path: Path) -> None:
    """Package files and temporary files that no row names (a crash between the file and its
    commit) are removed; the files of stored packages stay."""
    settings = StoreSettings(inline_max_bytes=10)
    kept, meta = pkg(1)
    async with SqliteStore(tmp_path, settings) as store:
        await store.put_package(kept, meta, T0)
        orphan = store.blobs.path("ab" * 32)
        orphan.parent.mkdir(parents=True, exist_ok=True)
        orphan.write_bytes(b"left by a crash")
        temporary = store.blobs.path(meta.sha256).with_name(".x.tmp")
        temporary.write_bytes(b"half written")
        assert await store.collect_orphans() == 2
        assert not orphan.exists()
        assert not temporary.exists()
        assert store.blobs.path(meta.sha256).read_bytes() == kept


async def test_extended_lease_is_not_taken_again(tmp_path: Path) -> None:
    """A lease extended before it runs out keeps the transfer taken past its first end; a
    lease that was lost cannot be extended."""
    settings = StoreSettings(lease_s=60.0)
    data, meta = pkg(1)
    async with SqliteStore(tmp_path, settings) as store:
        await store.put_package(data, meta, T0)
        await store.enqueue(meta.sha256, {"000.00.00.G22": ["x"]}, T0)
        lease = await store.lease_transfer(None, T0)
        assert lease is not None
        assert await store.extend_lease(lease, T0 + 50) == T0 + 110
        assert await store.lease_transfer(None, T0 + 100) is None
        again = await store.lease_transfer(None, T0 + 111)
        assert again is not None
        assert again.attempt == 2
        assert await store.extend_lease(lease, T0 + 112) is None


@pytest.mark.parametrize("size", [200, 64 * 1024], ids=["in-its-row", "in-a-file"])
async def test_a_package_corrupted_on_disk_is_quarantined_never_read(
    tmp_path: Path, size: int
) -> None:
    """A package whose stored bytes change (in its row or its file) is refused on the next
    read, whether it is asked for as a file or as bytes: the package is quarantined and its
    transfer dead-lettered, each with the reason, the journal still verifies, and no later
    read hands the bad bytes out."""
    state = tmp_path / "state"
    data, meta = pkg(7, size)
    async with SqliteStore(state) as store:
        package_id, _ = await store.put_package(data, meta, T0)
        await store.enqueue(package_id, {"000.00.00.G22": ["x"]}, T0)
    bad = data.replace(b"edXML", b"edXMl")
    if size > 16 * 1024:
        BlobDir(state / "packages").path(package_id).write_bytes(bad)
    else:
        with sqlite3.connect(state / "store.sqlite3") as db:
            db.execute("UPDATE packages SET data = ? WHERE package_id = ?", (bad, package_id))
    async with SqliteStore(state) as store:
        # The sender asks for the file first (none for a package in its row, which is then
        # read whole): either way the bad bytes are found there, and never kept for later.
        with pytest.raises(CorruptPackage, match="corrupted"):
            await store.package_file(package_id)
        for _ in range(2):
            with pytest.raises(CorruptPackage, match="corrupted"):
                await store.read_package(package_id)
        record = await store.get_package(package_id)
        assert record.state == PackageState.QUARANTINED
        assert "hash to" in (record.reason or "")
        (dead,) = await store.dead_letters()
        assert dead.package_id == package_id
        assert "corrupted" in dead.reason
        assert (await store.journal_verify()).ok


async def test_a_transfer_moved_by_a_commit_is_not_taken_while_its_flush_runs(
    tmp_path: Path,
) -> None:
    """A write that moves queued transfers elsewhere (expiry dead-letters them) is handed
    over; before it commits, the sender takes a transfer and reads the next ones ahead. The
    write commits, then waits for its flush in the flush thread (a slow disk). Meanwhile the
    sender takes the next transfer: the rows read ahead still list transfers just
    dead-lettered, and must not be used."""
    settings = StoreSettings(
        retry=replace(StoreSettings().retry, max_age_s=100.0),
        group_commit_max_wait_ms=300.0,  # the write waits for company: time to read ahead
    )
    hop = "000.00.00.G22"
    async with SqliteStore(tmp_path, settings) as store:
        for n in (1, 2, 3):
            data, meta = pkg(n)
            await store.put_package(data, meta, T0)
            await store.enqueue(meta.sha256, {hop: ["a"]}, T0)
        flushing, go_on = threading.Event(), threading.Event()
        sync_wal = store._sync_wal

        def slow_disk() -> None:
            flushing.set()
            go_on.wait(10)
            sync_wal()

        store._flush_s = 1.0  # flushes have been slow: the next one runs in the flush thread
        store._sync_wal = slow_disk  # type: ignore[method-assign]
        expiring = asyncio.ensure_future(store.expire(T0 + 200))
        try:
            await asyncio.sleep(0)  # handed over; the writer waits for more
            first = await store.lease_transfer(hop, T0)  # and reads the other two ahead
            assert first is not None
            assert await asyncio.to_thread(flushing.wait, 10), "the flush never started"
            taken = await store.lease_transfer(hop, T0 + 0.5)
        finally:
            go_on.set()
        expired = await expiring
        assert len(expired.transfers) == 3
        assert taken is None
