"""The durable store on one machine: SQLite for rows, small packages inline in their row, large
ones in files. Every operation is :mod:`lienthong.store.sqlstore`'s; this module is the engine.

Durability. The database runs in WAL mode. A transaction that someone is promised (a package
stored before its hop receipt or HTTP 200, a delivery, a state change) is on disk before its
callers hear of it: its commit is followed by an fdatasync of the WAL (below), or commits with
``synchronous=FULL`` (whose COMMIT does that fdatasync itself). Bookkeeping that can be lost
without harm (taking a transfer, a failed attempt, a hop receipt: at worst the transfer is sent
again and the next hop answers it as a duplicate) is not flushed by itself: the next flush
takes it along with the rest of the WAL, and a power loss drops at most the newest such commits
(never corrupts the database: checkpoints still sync). Package bytes are durable, name and
content, before the row that refers to them is committed.

Small packages (under ``store.inline_max_bytes``) live in their row, so they cost nothing beyond
the commit; larger ones get a content-addressed file (:class:`BlobDir`), written and made
durable with fdatasync of the file and one fsync of its folder per batch.

Grouped commits, run where they cost least. The shared writer task (:class:`SqlStore`) hands
each batch over whole. A batch with no package file (nearly all: packages, transfers, receipts
of a transit node) runs on the event loop itself: ``BEGIN IMMEDIATE``, the operations (plain
functions of a :class:`Tx`) as :func:`~lienthong.store.sqlstore.run_ops` runs them (one
SAVEPOINT, the journal entries in one ``executemany``), one COMMIT with ``synchronous=NORMAL``
(SQLite writes the WAL and syncs nothing); then, if an operation needs it durable, one
fdatasync of the WAL, which is what ``synchronous=FULL`` does at each COMMIT, and only then are
the callers' futures resolved. The statements cost tens of microseconds each; handing them to a
thread cost as much again in thread switches and contention for the interpreter lock. The
flush, the only part that waits on the disk, runs on the loop too while it is quick (under
:data:`INLINE_FLUSH_S` lately: a fraction of a millisecond on an SSD, less than the CPU the
thread switches around it would cost) and in the flush thread when the disk is slow. A row
committed this way is visible to reads (another transfer's lease, say) before its flush;
nothing is promised about it until the flush, and at worst a package goes on before a power
loss and comes back as a duplicate. Bookkeeping alone waits up to ``bookkeeping_wait_ms`` for a
write that is promised, and commits with it. The event loop never waits for a lock: it does not
wait at all on a database locked by another process (``lienthong requeue`` beside the daemon),
and hands that batch to the writer thread, which waits up to ``busy_timeout_ms`` as before.

A batch with package files runs in the writer thread: ``BEGIN IMMEDIATE``, its package files
started in the flush thread, the operations, the files waited for, one COMMIT (FULL when an
operation is durable).

SQLite's own checkpoints (copying the WAL into the database, two fsyncs) would run inside a
COMMIT on the loop: they are off, and the flush thread runs a PASSIVE checkpoint at most every
:data:`CHECKPOINT_EVERY_S`. If a flush of the WAL fails, the batch is committed but may not be
on disk, and the system reports such a failure only once, so no later flush could vouch for
it: the store then writes nothing more and intake stays stopped, with a reason that says so,
until the daemon is restarted (PostgreSQL stops on a failed fsync for the same reason).

Why this is as durable as one fsync per file: file content and directory entry are flushed (and
the flush's success checked) before the referring row commits. A file may sit under its final
name before it is durable (between the rename and the flush); no row refers to such a file, and
since a file is trusted only through a committed row, the next attempt overwrites it instead of
skipping it. If writing or flushing the files fails, the batch's files are removed, its
transaction is rolled back, every operation that needed a file fails with that error, and the
others run again in a transaction of their own. An operation that raises is rolled back to its
savepoint alone; a failing COMMIT (or flush of the WAL) fails every operation of the batch.
Reads use a second connection in a thread of its own and see only committed data, each read
one call; the few rows a transfer's take reads ahead come from a third connection, on the loop,
which never waits for a lock (the thread reads instead when it would have to).

The journal head is read inside each write transaction, so another process writing the same
database (the ``lienthong requeue`` command beside a running daemon) continues the same chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, overload

from lienthong.config import StoreSettings
from lienthong.logs import get_logger
from lienthong.store.blobs import BlobDir, datasync, file_digest, fsync_folder, write_durably
from lienthong.store.errors import DatabaseLocked, DiskFull, StoreTransientError, UnknownId
from lienthong.store.model import PackageSource
from lienthong.store.sqlstore import Outcome, Pending, Query, Row, SqlStore, Tx, run_ops

T = TypeVar("T")
DB_NAME = "store.sqlite3"
INLINE_FLUSH_S = 0.002
"""A WAL flush that takes less than this (moving average) runs on the event loop."""
CHECKPOINT_EVERY_S = 1.0
"""How often the WAL is copied into the database (at most; in the flush thread)."""

_log = get_logger("lienthong.store")


class _Tx(Tx):
    """The open SQLite write transaction (in the database thread)."""

    def __init__(self, db: sqlite3.Connection, head: tuple[int, str]) -> None:
        super().__init__(head)
        self.db = db

    def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        row: sqlite3.Row | None = self.db.execute(sql, params).fetchone()
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        return self.db.execute(sql, params).fetchall()

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return self.db.execute(sql, params).rowcount


class SqliteStore(SqlStore):
    """The :class:`~lienthong.store.base.Store` on SQLite files under ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        settings: StoreSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(state_dir, settings, rng)
        self.db_path = state_dir / DB_NAME
        self.blobs = BlobDir(state_dir / "packages")
        self._writer: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._loop_reader: sqlite3.Connection | None = None
        self._read_thread: ThreadPoolExecutor | None = None
        self._flush_thread: ThreadPoolExecutor | None = None
        # The writer connection's synchronous setting (FULL: True) and lock wait (ms) now.
        self._mode = (True, self.settings.busy_timeout_ms)
        self._folder_synced = False
        self._flush_s = 0.0  # how long flushing the WAL takes lately (moving average)
        self._wal_fd: int | None = None  # kept open: a write error is reported to it (below)
        self._wal_lost: str | None = None  # why the WAL can no longer be trusted, if it cannot
        self._checkpointer: sqlite3.Connection | None = None
        self._checkpoint: Future[None] | None = None  # the last one started
        self._checkpointed_at = 0.0

    async def open(self) -> None:
        """Open the database (creating or migrating it) and start the writer task."""
        if self._task is not None:
            raise RuntimeError("store is already open")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        self._read_thread = ThreadPoolExecutor(1, thread_name_prefix="store-reader")
        self._flush_thread = ThreadPoolExecutor(1, thread_name_prefix="store-flush")
        loop = asyncio.get_running_loop()
        try:
            self._writer = await loop.run_in_executor(self._write_thread, self._open_writer)
            self._reader = await loop.run_in_executor(self._read_thread, self._connect)
            await loop.run_in_executor(
                self._read_thread, self._reader.execute, "PRAGMA query_only = ON"
            )
            self._loop_reader = await loop.run_in_executor(self._read_thread, self._connect)
            self._loop_reader.execute("PRAGMA query_only = ON")
            self._loop_reader.execute("PRAGMA busy_timeout = 0")
        except BaseException as exc:
            # Also on a refused schema: an unclosed connection's thread outlives the loop.
            await self._close_connections()
            if isinstance(exc, sqlite3.Error):
                raise self._db_error(exc, "opening the database") from exc
            raise
        self._start()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
        db.row_factory = sqlite3.Row
        db.execute(f"PRAGMA busy_timeout = {int(self.settings.busy_timeout_ms)}")
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA synchronous = FULL")
        # Statement journals of the savepoints grouped operations run in: kept in memory,
        # not in a temporary file opened, written and removed per transaction.
        db.execute("PRAGMA temp_store = MEMORY")
        return db

    def _open_writer(self) -> sqlite3.Connection:
        db = self._connect()
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints: _checkpoint_soon
            _migrate(db)
        except BaseException:
            db.close()
            raise
        self._mode = (True, self.settings.busy_timeout_ms)
        self._folder_synced = False
        return db

    async def close(self) -> None:
        """Finish the writes already handed over, then close."""
        await self._stop()
        await self._close_connections()

    async def _close_connections(self) -> None:
        loop = asyncio.get_running_loop()
        if self._wal_fd is not None:
            os.close(self._wal_fd)
            self._wal_fd = None
        # The checkpointer closes after the checkpoint it may be running (same thread); the
        # writer last, which lets SQLite copy the WAL into the database and remove it.
        for db, thread in (
            (self._checkpointer, self._flush_thread),
            (self._loop_reader, self._read_thread),
            (self._reader, self._read_thread),
            (self._writer, self._write_thread),
        ):
            if db is not None and thread is not None:
                await loop.run_in_executor(thread, db.close)
        self._checkpointer = self._loop_reader = self._reader = self._writer = None
        for executor in (self._read_thread, self._write_thread, self._flush_thread):
            if executor is not None:
                executor.shutdown(wait=False)
        self._read_thread = self._write_thread = self._flush_thread = None

    async def _commit(self, batch: list[Pending]) -> list[Outcome]:
        """Run a batch with no package file on the event loop, then flush the WAL if an
        operation needs it durable; a batch with files, or one that finds the database locked
        by another process, in the writer thread (see the module docstring). Never raises: an
        error fails the batch's operations, and the writer goes on."""
        if self._wal_lost is not None:
            return [(False, StoreTransientError(self._wal_lost))] * len(batch)
        try:
            outcomes = None
            if not any(item.blobs for item in batch):
                outcomes = self._run_batch(batch, on_loop=True)
            if outcomes is None:
                outcomes = await super()._commit(batch)
            elif any(item.durable and ok for item, (ok, _) in zip(batch, outcomes, strict=True)):
                try:
                    await self._flush_wal()
                except OSError as exc:
                    return [(False, self._lost_wal(exc))] * len(batch)
        except Exception as exc:  # a bug: fail this batch, keep the writer for the next ones
            _log.error("store_batch_failed", error=repr(exc), exc_info=True)
            return [(False, exc)] * len(batch)
        self._checkpoint_soon()
        return outcomes

    def _lost_wal(self, exc: OSError) -> StoreTransientError:
        """The WAL could not be flushed: the batch is committed but may not be on disk, and
        the system reports a write error only once, so no later flush can vouch for it.
        Nothing more is written (PostgreSQL stops for the same reason) until a restart reads
        the database again; the error to give the batch's callers."""
        self._wal_lost = (
            f"the database log could not be flushed to disk ({self.db_path}-wal: {exc});"
            " the node writes nothing more until its daemon is restarted: check the disk"
        )
        _log.error("store_log_not_flushed", reason=self._wal_lost)
        error = StoreTransientError(self._wal_lost)
        self._blocked_by(error)
        return error

    async def _flush_wal(self) -> None:
        """Flush the WAL (:meth:`_sync_wal`): on the loop while flushes take less than
        :data:`INLINE_FLUSH_S` (a fast disk: cheaper than the two thread switches around it,
        which cost more CPU than the flush itself on a virtual machine), else in the flush
        thread, so that a slow disk holds up only the callers of this batch."""
        started = time.perf_counter()
        if self._flush_s < INLINE_FLUSH_S:
            self._sync_wal()
        else:
            assert self._flush_thread is not None
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._flush_thread, self._sync_wal)
        # Measured on either path, so a disk that is fast again brings the flush back.
        self._flush_s += (time.perf_counter() - started - self._flush_s) / 8

    def _sync_wal(self) -> None:
        """Make the commits written to the WAL durable: what ``synchronous=FULL`` does at each
        COMMIT (fdatasync of the WAL), once for all the commits written since the last one;
        the first time, the folder too (the WAL file may be new).

        The WAL stays open for this from the first flush on: the system reports a failed
        write-back to every descriptor open when it failed, so one kept open hears of it even
        when SQLite's own sync (a checkpoint's) heard of it first."""
        if self._wal_fd is None:
            self._wal_fd = os.open(f"{self.db_path}-wal", os.O_RDONLY)
        datasync(self._wal_fd)
        if not self._folder_synced:
            fsync_folder(self.db_path.parent)
            self._folder_synced = True

    def _checkpoint_soon(self) -> None:
        """Copy the WAL into the database in the flush thread, at most every
        :data:`CHECKPOINT_EVERY_S`. The writer's own automatic checkpoints are off: they would
        run inside a COMMIT on the event loop, with two fsyncs."""
        now = time.monotonic()
        running = self._checkpoint is not None and not self._checkpoint.done()
        if running or now - self._checkpointed_at < CHECKPOINT_EVERY_S:
            return
        assert self._flush_thread is not None
        self._checkpointed_at = now
        self._checkpoint = self._flush_thread.submit(self._copy_wal)
        self._checkpoint.add_done_callback(_checkpoint_done)

    def _copy_wal(self) -> None:
        """A PASSIVE checkpoint (it waits for no reader or writer), on a connection of its
        own."""
        if self._checkpointer is None:
            self._checkpointer = self._connect()
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    @overload
    def _run_batch(self, batch: list[Pending]) -> list[Outcome]: ...

    @overload
    def _run_batch(self, batch: list[Pending], *, on_loop: bool) -> list[Outcome] | None: ...

    def _run_batch(self, batch: list[Pending], *, on_loop: bool = False) -> list[Outcome] | None:
        """Run the batch in one transaction; each op's outcome.

        In the writer thread (``on_loop`` False): the COMMIT fsyncs the WAL when an operation
        is durable, and a lock held by another process is waited for up to ``busy_timeout_ms``.
        On the event loop: the COMMIT never fsyncs (the caller flushes the WAL afterwards) and a
        lock held elsewhere is not waited for: None, nothing done, for the writer thread to
        wait instead."""
        db = self._writer
        assert db is not None
        try:
            if on_loop:
                self._set_mode(db, False, 0)
            else:
                self._set_mode(
                    db, any(item.durable for item in batch), self.settings.busy_timeout_ms
                )
            try:
                db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                if on_loop and _locked(exc):
                    return None
                raise
            row = db.execute("SELECT seq, hash FROM journal_head WHERE id = 1").fetchone()
            head = start = (int(row[0]), str(row[1]))
            # The files are written and flushed while the operations run: their rows stay
            # invisible until the COMMIT, which waits for the flush.
            flushing = self._start_blobs(db, batch)
            outcomes, head = run_ops(
                batch, head, lambda at: _Tx(db, at), db.execute, sqlite3.Error, db.executemany
            )
            if flushing is not None:
                try:
                    flushing.result()
                except StoreTransientError as exc:
                    db.execute("ROLLBACK")
                    return self._fail_blob_ops(batch, exc)
            if head != start:
                db.execute("UPDATE journal_head SET seq = ?, hash = ? WHERE id = 1", head)
            db.execute("COMMIT")
        except Exception as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            error: Exception = exc
            if isinstance(exc, sqlite3.Error):
                error = self._blocked_by(self._db_error(exc, f"committing {len(batch)} write(s)"))
            return [(False, error)] * len(batch)
        return outcomes

    def _blocked_by(self, error: Exception) -> Exception:
        """``error``; a transient one (disk full, locked, I/O) also stops the intake."""
        if isinstance(error, StoreTransientError):
            self._blocked = str(error)
        return error

    def _set_mode(self, db: sqlite3.Connection, full: bool, wait_ms: int) -> None:
        """``synchronous`` FULL (the COMMIT fsyncs the WAL) or NORMAL (it does not), and how
        long to wait for a lock held by another process, for the next batch."""
        if (full, wait_ms) != self._mode:
            db.execute(f"PRAGMA synchronous = {'FULL' if full else 'NORMAL'}")
            db.execute(f"PRAGMA busy_timeout = {int(wait_ms)}")
            self._mode = (full, wait_ms)

    def _start_blobs(self, db: sqlite3.Connection, batch: list[Pending]) -> Future[None] | None:
        """Start making the batch's new package files durable (in the blob thread).

        Runs inside the batch's write transaction, and only this thread inserts packages, so a
        digest with no row here gets none before this batch commits: its file is (re)written.
        """
        wanted = {digest: data for item in batch for digest, data in item.blobs}
        if wanted:
            known = db.execute(
                "SELECT value FROM json_each(?) WHERE value IN (SELECT package_id FROM packages)",
                (json.dumps(list(wanted)),),
            ).fetchall()
            for (digest,) in known:
                del wanted[digest]
        if not wanted:
            return None
        assert self._flush_thread is not None
        return self._flush_thread.submit(self.blobs.write_batch, wanted)

    def _fail_blob_ops(self, batch: list[Pending], error: StoreTransientError) -> list[Outcome]:
        """The files of the rolled-back batch failed: so do the operations that needed one;
        the others run again, alone."""
        rest = [item for item in batch if not item.blobs]
        again = iter(self._run_batch(rest) if rest else [])
        return [(False, error) if item.blobs else next(again) for item in batch]

    def _db_error(self, exc: sqlite3.Error, what: str) -> Exception:
        """The SQLite error as the project's error naming the cause."""
        text = str(exc)
        if _locked(exc):
            seconds = self.settings.busy_timeout_ms / 1000
            return DatabaseLocked(
                f"database is locked after {seconds:g} s while {what} ({self.db_path})"
            )
        if "full" in text or "too large" in text:
            return DiskFull(f"disk full while {what} ({self.db_path}): {text}")
        if isinstance(exc, sqlite3.OperationalError):
            return StoreTransientError(f"database error while {what} ({self.db_path}): {text}")
        return exc

    # -- reads ---------------------------------------------------------------------------

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """``work(reader)`` as one call in the reader's thread."""
        reader = self._reader
        if reader is None:
            raise RuntimeError("store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._read_thread, work, reader)
        except sqlite3.Error as exc:
            raise self._db_error(exc, "reading") from exc

    async def _read_many(self, queries: Sequence[Query]) -> list[list[Row]]:
        return await self._read(lambda db: _fetch(db, queries))

    async def _read_few(self, queries: Sequence[Query]) -> list[list[Row]]:
        """On the event loop, with a connection of its own that never waits for a lock: a
        few rows cost less than the thread switches of :meth:`_read_many`, which takes over
        in the rare case the database is busy (another process recovering it)."""
        db = self._loop_reader
        if db is not None:
            try:
                return _fetch(db, queries)
            except sqlite3.OperationalError as exc:
                if not _locked(exc):
                    raise self._db_error(exc, "reading") from exc
        return await self._read_many(queries)

    async def _read_bytes(self, package_id: str) -> bytes:
        """From the package's row or its file, in one read."""

        def read(db: sqlite3.Connection) -> bytes:
            row = db.execute(
                "SELECT data FROM packages WHERE package_id = ?", (package_id,)
            ).fetchone()
            if row is None:
                raise UnknownId(f"no package {package_id}")
            return bytes(row[0]) if row[0] is not None else self.blobs.read(package_id)

        return await self._read(read)

    # -- where package bytes live --------------------------------------------------------

    keeps_files = True

    def _inline(self, data: PackageSource) -> bytes | None:
        """``data`` when it is small enough to live in its row, else None (it gets a file; a
        file given is adopted)."""
        if isinstance(data, Path):
            return None
        return data if len(data) < self.settings.inline_max_bytes else None

    def _file_blobs(
        self, blobs: Sequence[tuple[str, PackageSource]]
    ) -> tuple[tuple[str, PackageSource], ...]:
        # Those under the limit live in their row.
        return tuple(b for b in blobs if self._inline(b[1]) is None)

    async def package_file(self, package_id: str) -> Path | None:
        """The file of a stored package, or None when it is small enough to read whole with
        :meth:`read_package` (it lives in its row, or was stored lately and is in memory). The
        file is hashed first: one that no longer matches its id is quarantined as
        :meth:`read_package` does (:class:`CorruptPackage`)."""
        if package_id in self._recent:
            return None

        def in_row(db: sqlite3.Connection) -> bytes | None:
            row = db.execute(
                "SELECT data FROM packages WHERE package_id = ?", (package_id,)
            ).fetchone()
            if row is None:
                raise UnknownId(f"no package {package_id}")
            return None if row[0] is None else bytes(row[0])

        data = await self._read(in_row)
        if data is not None:
            # Read whole now, checked as read_package checks what it reads, and kept for the
            # read_package that follows: one trip to the reader's thread instead of two.
            self._remember(package_id, await self._checked(package_id, data))
            return None
        path = self.blobs.path(package_id)
        # Checked as read_package checks what it reads: one pass over the file, in pieces.
        digest = (await asyncio.to_thread(file_digest, path))[0]
        if digest != package_id:
            await self._quarantine_corrupt(package_id, digest)
        return path

    async def collect_orphans(self) -> int:
        """Remove package files no row names (left by a crash between a file and its commit);
        how many. Only while no other process may be storing packages in this folder."""

        def named(db: sqlite3.Connection, digests: list[str]) -> set[str]:
            rows = db.execute(
                "SELECT value FROM json_each(?) WHERE value IN"
                " (SELECT package_id FROM packages WHERE data IS NULL)",
                (json.dumps(digests),),
            ).fetchall()
            return {str(r[0]) for r in rows}

        removed = await self._read(
            lambda db: self.blobs.collect(lambda digests: named(db, digests))
        )
        if removed:
            _log.warning("orphan_package_files_removed", count=len(removed))
        return len(removed)

    async def _probe(self) -> None:
        """Write and flush a 64 KiB file in the state folder (package files go there)."""
        probe = self.state_dir / ".probe"
        await asyncio.to_thread(write_durably, probe, b"\0" * 65536, "probe file")
        probe.unlink()


def _migrate(db: sqlite3.Connection) -> None:
    from lienthong.store.schema import MIGRATIONS

    row = db.execute("PRAGMA user_version").fetchone()
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise StoreTransientError(
            f"database schema version {version} is newer than this lienthong knows "
            f"({len(MIGRATIONS)}): upgrade lienthong"
        )
    for number in range(version, len(MIGRATIONS)):
        db.executescript(
            f"BEGIN IMMEDIATE; {MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; COMMIT;"
        )


def _checkpoint_done(done: Future[None]) -> None:
    """Log a checkpoint that failed (in the flush thread, where it ran)."""
    error = None if done.cancelled() else done.exception()
    if error is not None:
        # The WAL keeps the frames not copied; the next checkpoint tries again.
        _log.warning("store_checkpoint_failed", reason=str(error))


def _locked(exc: sqlite3.Error) -> bool:
    """True when ``exc`` says another connection holds the lock."""
    text = str(exc)
    return "locked" in text or "busy" in text


def _fetch(db: sqlite3.Connection, queries: Sequence[Query]) -> list[list[Row]]:
    # fetchall ends each statement, so the next read sees the latest commit.
    return [db.execute(sql, params).fetchall() for sql, params in queries]
