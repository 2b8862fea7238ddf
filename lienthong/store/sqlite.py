"""The durable store: SQLite (aiosqlite) for rows, content-addressed files for package bytes.

Durability. The database runs in WAL mode with ``synchronous=FULL``: every COMMIT fsyncs the
WAL, so a committed transaction survives power loss. (``NORMAL`` with WAL would only keep the
database consistent, and could lose the last commits: not acceptable when a commit is what a
hop receipt or an HTTP 200 promises.) Package bytes are durable, name and content, before the
row that refers to them is committed.

Grouped commits. One writer task owns the write connection. Callers hand it an operation (with
the package file it needs, if any) and await a future; the writer takes every operation waiting
(up to ``group_commit_max_batch``, waiting up to ``group_commit_max_wait_ms`` for more), opens
one ``BEGIN IMMEDIATE`` transaction, starts writing the batch's new package files and making
them durable with ONE flush (:meth:`BlobDir.write_batch`: ``syncfs(2)``, or per-file fdatasync
and one fsync per directory, in a thread), runs each operation in its own SAVEPOINT meanwhile,
waits for the flush, COMMITs once (one WAL fsync), and only then resolves the futures. So many
packages share both flushes when they arrive together, and no call returns before its change
is durable.

Why this is as durable as one fsync per file: the order on disk is unchanged for every row
that names a file: file content and directory entry flushed (and the flush's success checked)
first, the referring row committed after. What changed is only that a file may now sit under
its final name before it is durable (between the rename and the flush); no row refers to such a
file, and since a file is trusted only through a committed row, the next attempt overwrites
it instead of skipping it. If writing or flushing the files fails, the batch's files are
removed, its transaction is rolled back (so no row refers to them), every operation that
needed a file fails with that error, and the others run again in a transaction of their
own. An operation that raises is rolled back to its savepoint alone; a failing COMMIT fails
every operation of the batch. Reads use a second connection and see only committed data,
each read as one job on its thread so that it sees the latest commit.

The journal head is read inside each write transaction, so another process writing the same
database (the ``lienthong requeue`` command beside a running daemon) continues the same chain.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sqlite3
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import aiosqlite

from lienthong.config import StoreSettings
from lienthong.store import retry
from lienthong.store.blobs import BlobDir, write_durably
from lienthong.store.errors import (
    DatabaseLocked,
    DigestMismatch,
    DiskFull,
    IntakeBlocked,
    StoreTransientError,
    UnknownId,
    WrongPeer,
)
from lienthong.store.journal import JournalEntry, JournalReport, make_entry, verify_chain
from lienthong.store.lifecycle import (
    PACKAGE_EXPIRABLE,
    ConcurrentChange,
    InboxState,
    PackageState,
    TransferState,
    check,
)
from lienthong.store.model import (
    Conflict,
    DeadLetter,
    Expired,
    FailOutcome,
    FailResult,
    InboxEntry,
    Lease,
    OldestWaiting,
    OpenTransfer,
    PackageMeta,
    PackageRecord,
    QueueSummary,
    Receipt,
    ReceiveOutcome,
    ReceiveResult,
    Rerouted,
)

T = TypeVar("T")
DB_NAME = "store.sqlite3"
_TABLE_OF = {"package": ("packages", "package_id"), "transfer": ("transfers", "transfer_id")}
_TABLE_OF["inbox entry"] = ("inbox", "entry_id")


class _Tx:
    """One operation's view of the open write transaction, with the journal head."""

    def __init__(self, db: aiosqlite.Connection, head: tuple[int, str]) -> None:
        self.db = db
        self.head = head

    async def one(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        async with self.db.execute(sql, params) as cur:
            return await cur.fetchone()

    async def all(self, sql: str, params: Sequence[Any] = ()) -> Iterable[sqlite3.Row]:
        async with self.db.execute(sql, params) as cur:
            return await cur.fetchall()

    async def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        async with self.db.execute(sql, params) as cur:
            return cur.rowcount

    async def log(
        self,
        at: float,
        entity: str,
        entity_id: str,
        from_state: str | None,
        to_state: str,
        detail: str = "",
    ) -> None:
        """Append a journal entry chained to the current head."""
        e = make_entry(self.head, at, entity, entity_id, from_state, to_state, detail)
        await self.run(
            "INSERT INTO journal VALUES (?,?,?,?,?,?,?,?,?)",
            (
                e.seq,
                e.at,
                e.entity,
                e.entity_id,
                e.from_state,
                e.to_state,
                e.detail,
                e.prev_hash,
                e.hash,
            ),
        )
        self.head = (e.seq, e.hash)

    async def move(
        self,
        entity: str,
        entity_id: str | int,
        to_state: str,
        now: float,
        detail: str = "",
        sets: Mapping[str, Any] | None = None,
    ) -> str:
        """Check and apply one state change (guarded by the state read); the old state."""
        table, key = _TABLE_OF[entity]
        row = await self.one(f"SELECT state FROM {table} WHERE {key} = ?", (entity_id,))  # noqa: S608
        if row is None:
            raise UnknownId(f"no {entity} {entity_id}")
        from_state = str(row[0])
        check(entity, str(entity_id), from_state, to_state)
        columns = {"state": to_state, **(sets or {})}
        if entity != "inbox entry":
            columns["updated_at"] = now
        assignments = ", ".join(f"{c} = ?" for c in columns)
        changed = await self.run(
            f"UPDATE {table} SET {assignments} WHERE {key} = ? AND state = ?",  # noqa: S608
            (*columns.values(), entity_id, from_state),
        )
        if changed != 1:
            raise ConcurrentChange(entity, str(entity_id), from_state, to_state)
        await self.log(now, entity, str(entity_id), from_state, to_state, detail)
        return from_state


Op = Callable[[_Tx], Awaitable[T]]


@dataclass
class _Pending:
    op: Op[Any]
    future: asyncio.Future[Any]
    blob: tuple[str, bytes] | None = None  # (sha256, bytes) the op's rows will refer to


class SqliteStore:
    """The :class:`~lienthong.store.base.Store` on SQLite files under ``state_dir``."""

    def __init__(
        self,
        state_dir: Path,
        settings: StoreSettings | None = None,
        rng: random.Random | None = None,
        use_syncfs: bool | None = None,
    ) -> None:
        """``use_syncfs``: how package files are flushed, see :class:`BlobDir`."""
        self.state_dir = state_dir
        self.settings = settings or StoreSettings()
        self.db_path = state_dir / DB_NAME
        self.blobs = BlobDir(state_dir / "packages", use_syncfs)
        self._quarantine = state_dir / "quarantine"
        self._rng = rng or random.Random()
        self._writer: aiosqlite.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_Pending | None] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None
        self._blocked: str | None = None

    # -- opening and closing -------------------------------------------------------------

    @property
    def intake_blocked(self) -> str | None:
        """Why intake is stopped, or None."""
        return self._blocked

    async def open(self) -> None:
        """Open the database (creating or migrating it) and start the writer task."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            self._writer = await self._connect()
            await self._writer.execute("PRAGMA journal_mode = WAL")
            await _migrate(self._writer)
            self._reader = await self._connect()
            await self._reader.execute("PRAGMA query_only = ON")
        except BaseException as exc:
            # Also on a refused schema: an unclosed connection's thread outlives the loop.
            await self._close_connections()
            if isinstance(exc, sqlite3.Error):
                raise self._db_error(exc, "opening the database") from exc
            raise
        self._task = asyncio.create_task(self._write_loop(), name="store-writer")

    async def _connect(self) -> aiosqlite.Connection:
        db = await aiosqlite.connect(self.db_path, isolation_level=None)
        db.row_factory = sqlite3.Row
        await db.execute(f"PRAGMA busy_timeout = {int(self.settings.busy_timeout_ms)}")
        await db.execute("PRAGMA foreign_keys = ON")
        await db.execute("PRAGMA synchronous = FULL")
        return db

    async def close(self) -> None:
        """Finish the writes already handed over, then close."""
        if self._task is not None:
            self._queue.put_nowait(None)
            await self._task
            self._task = None
        await self._close_connections()

    async def _close_connections(self) -> None:
        for db in (self._reader, self._writer):
            if db is not None:
                await db.close()
        self._reader = self._writer = None

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- the writer ----------------------------------------------------------------------

    async def _write(self, op: Op[T], blob: tuple[str, bytes] | None = None) -> T:
        """Run ``op`` in the next grouped transaction; return once it is committed.

        ``blob`` is a package file ``(sha256, bytes)`` the op may refer to: it is made durable
        with the rest of the batch's files before the op runs, unless a committed row already
        refers to it. If that fails the op does not run and raises the file's error.
        """
        if self._task is None:
            raise RuntimeError("store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(op, future, blob))
        # The operation commits even if this caller is cancelled while waiting.
        return await asyncio.shield(future)

    async def _write_loop(self) -> None:
        max_batch = self.settings.group_commit_max_batch
        max_wait = self.settings.group_commit_max_wait_ms / 1000
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = loop.time() + max_wait
            while len(batch) < max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    try:
                        item = await asyncio.wait_for(self._queue.get(), remaining)
                    except TimeoutError:
                        break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            await self._run_batch(batch)

    async def _run_batch(self, batch: list[_Pending]) -> None:
        db = self._writer
        assert db is not None
        outcomes: list[tuple[_Pending, Any, bool]] = []
        try:
            await db.execute("BEGIN IMMEDIATE")
            async with db.execute("SELECT seq, hash FROM journal_head WHERE id = 1") as cur:
                row = await cur.fetchone()
            assert row is not None
            head = start = (int(row[0]), str(row[1]))
            # The files are written and flushed while the operations run: their rows stay
            # invisible until the COMMIT, which waits for the flush.
            flushing = await self._start_blobs(db, batch)
            for item in batch:
                tx = _Tx(db, head)
                await db.execute("SAVEPOINT op")
                try:
                    result = await item.op(tx)
                except sqlite3.Error:
                    raise
                except Exception as exc:  # the operation's own refusal: undo it alone
                    await db.execute("ROLLBACK TO op")
                    await db.execute("RELEASE op")
                    outcomes.append((item, exc, False))
                else:
                    await db.execute("RELEASE op")
                    head = tx.head
                    outcomes.append((item, result, True))
            if flushing is not None:
                try:
                    await flushing
                except StoreTransientError as exc:
                    await db.execute("ROLLBACK")
                    await self._fail_blob_ops(batch, exc)
                    return
            if head != start:
                await db.execute("UPDATE journal_head SET seq = ?, hash = ? WHERE id = 1", head)
            await db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    await db.execute("ROLLBACK")
            error: BaseException = exc
            if isinstance(exc, sqlite3.Error):
                error = self._db_error(exc, f"committing {len(batch)} write(s)")
                if isinstance(error, StoreTransientError):
                    self._blocked = str(error)
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            return
        for item, value, ok in outcomes:
            if item.future.done():
                continue
            if ok:
                item.future.set_result(value)
            else:
                item.future.set_exception(value)

    async def _start_blobs(
        self, db: aiosqlite.Connection, batch: list[_Pending]
    ) -> asyncio.Task[None] | None:
        """Start making the batch's new package files durable with one flush.

        Runs inside the batch's write transaction, and only this task inserts packages, so a
        digest with no row here gets none before this batch commits: its file is (re)written.
        """
        wanted = {item.blob[0]: item.blob[1] for item in batch if item.blob is not None}
        if wanted:
            async with db.execute(
                "SELECT value FROM json_each(?) WHERE value IN (SELECT package_id FROM packages)",
                (json.dumps(list(wanted)),),
            ) as cur:
                for (known,) in await cur.fetchall():
                    del wanted[known]
        if not wanted:
            return None
        task = asyncio.create_task(asyncio.to_thread(self.blobs.write_batch, wanted))
        # Retrieved here too, for when a database error ends the batch before it is awaited.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return task

    async def _fail_blob_ops(self, batch: list[_Pending], error: StoreTransientError) -> None:
        """The files of the rolled-back batch failed: so do the operations that needed one;
        the others run again, alone."""
        for item in batch:
            if item.blob is not None and not item.future.done():
                item.future.set_exception(error)
        rest = [item for item in batch if item.blob is None]
        if rest:
            await self._run_batch(rest)

    def _db_error(self, exc: sqlite3.Error, what: str) -> Exception:
        """The SQLite error as the project's error naming the cause."""
        text = str(exc)
        if "locked" in text or "busy" in text:
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

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        if self._reader is None:
            raise RuntimeError("store is not open")
        try:
            # One job on the reader's thread: a cursor left open between execute and fetch
            # would hold a read transaction, and reads queued meanwhile would share its
            # stale snapshot instead of seeing the latest commit.
            return list(await self._reader.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise self._db_error(exc, "reading") from exc

    async def _row(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    # -- intake ----------------------------------------------------------------------------

    def _check_intake(self) -> None:
        if self._blocked is not None:
            raise IntakeBlocked(f"intake stopped: {self._blocked}")

    async def _intake(self, op: Op[T], blob: tuple[str, bytes] | None = None) -> T:
        try:
            return await self._write(op, blob)
        except StoreTransientError as exc:
            self._blocked = str(exc)
            raise

    async def resume_intake(self) -> bool:
        """Probe the disk and the database; clear :attr:`intake_blocked` if both work."""
        probe = self.state_dir / ".probe"
        try:
            await asyncio.to_thread(write_durably, probe, b"\0" * 65536, "probe file")
            probe.unlink()

            async def nothing(tx: _Tx) -> None:
                await tx.one("SELECT 1")

            await self._write(nothing)
        except StoreTransientError as exc:
            self._blocked = str(exc)
            return False
        self._blocked = None
        return True

    async def put_package(self, data: bytes, meta: PackageMeta, now: float) -> tuple[str, bool]:
        """Store a package submitted here: ``(package_id, duplicate)``."""
        meta.check(data)
        self._check_intake()
        pid = meta.sha256
        if await self._row("SELECT 1 FROM packages WHERE package_id = ?", (pid,)):
            return pid, True

        async def op(tx: _Tx) -> bool:
            if await tx.one("SELECT 1 FROM packages WHERE package_id = ?", (pid,)):
                return True
            await _insert_package(tx, meta, None, PackageState.SIGNED, now)
            return False

        return pid, await self._intake(op, (pid, data))

    async def receive(
        self, transfer_id: str, data: bytes, meta: PackageMeta, from_peer: str, now: float
    ) -> ReceiveResult:
        """Store a package from a neighbour, deduped by transfer id and digest."""
        meta.check(data)
        self._check_intake()
        pid = meta.sha256
        prior = await self._row("SELECT sha256 FROM received WHERE transfer_id = ?", (transfer_id,))
        if prior is None or prior[0] == pid:

            async def op(tx: _Tx) -> ReceiveResult:
                seen = await tx.one(
                    "SELECT sha256 FROM received WHERE transfer_id = ?", (transfer_id,)
                )
                if seen is not None:
                    if seen[0] != pid:
                        return ReceiveResult(ReceiveOutcome.CONFLICT, str(seen[0]))
                    await tx.run(
                        "UPDATE received SET duplicates = duplicates + 1 WHERE transfer_id = ?",
                        (transfer_id,),
                    )
                    return ReceiveResult(ReceiveOutcome.DUPLICATE, pid)
                known = await tx.one("SELECT 1 FROM packages WHERE package_id = ?", (pid,))
                if not known:
                    await _insert_package(tx, meta, from_peer, PackageState.RECEIVED, now)
                await tx.run(
                    "INSERT INTO received VALUES (?,?,?,?,?,?)",
                    (transfer_id, pid, from_peer, pid, now, 1 if known else 0),
                )
                outcome = ReceiveOutcome.DUPLICATE if known else ReceiveOutcome.NEW
                return ReceiveResult(outcome, pid)

            result = await self._intake(op, (pid, data) if prior is None else None)
            if result.outcome is not ReceiveOutcome.CONFLICT:
                return result
            stored = result.package_id
        else:
            stored = str(prior[0])
        return await self._record_conflict(transfer_id, data, stored, pid, from_peer, now)

    async def _record_conflict(
        self, transfer_id: str, data: bytes, stored: str, other: str, from_peer: str, now: float
    ) -> ReceiveResult:
        path = self._quarantine / f"{transfer_id}.{other}"
        try:
            await asyncio.to_thread(
                write_durably, path, data, f"conflicting transfer {transfer_id}"
            )
        except StoreTransientError as exc:
            self._blocked = str(exc)
            raise

        async def op(tx: _Tx) -> None:
            await tx.run(
                "INSERT INTO conflicts (transfer_id, from_peer, stored_sha256, other_sha256,"
                " quarantined, at) VALUES (?,?,?,?,?,?)",
                (transfer_id, from_peer, stored, other, str(path), now),
            )
            detail = f"from {from_peer}: sha256 {other}, had {stored}; kept at {path}"
            await tx.log(now, "transfer-in", transfer_id, None, "conflict", detail)

        await self._intake(op)
        return ReceiveResult(ReceiveOutcome.CONFLICT, stored)

    # -- packages ---------------------------------------------------------------------------

    async def read_package(self, package_id: str) -> bytes:
        """The bytes of a stored package."""
        await self.get_package(package_id)
        return await asyncio.to_thread(self.blobs.read, package_id)

    async def get_package(self, package_id: str) -> PackageRecord:
        """The package's record, or :class:`UnknownId`."""
        row = await self._row("SELECT * FROM packages WHERE package_id = ?", (package_id,))
        if row is None:
            raise UnknownId(f"no package {package_id}")
        return _package_record(row)

    async def packages(self, state: PackageState) -> list[PackageRecord]:
        """Packages in ``state``, oldest first."""
        rows = await self._rows(
            "SELECT * FROM packages WHERE state = ? ORDER BY created_at", (state.value,)
        )
        return [_package_record(r) for r in rows]

    async def set_package_state(
        self, package_id: str, to_state: PackageState, now: float, reason: str | None = None
    ) -> None:
        """Move a package along its life cycle."""

        async def op(tx: _Tx) -> None:
            sets = {"reason": reason} if reason is not None else None
            await tx.move("package", package_id, to_state, now, reason or "", sets)

        await self._write(op)

    # -- transfers ---------------------------------------------------------------------------

    async def enqueue(
        self, package_id: str, hops: Mapping[str, Sequence[str]], now: float
    ) -> list[str]:
        """One queued transfer per next hop; the package becomes routed."""
        if not hops:
            raise ValueError("enqueue needs at least one next hop")

        async def op(tx: _Tx) -> list[str]:
            await tx.move("package", package_id, PackageState.ROUTED, now, ", ".join(hops))
            ids = []
            for hop, recipients in hops.items():
                tid = uuid.uuid4().hex
                await tx.run(
                    "INSERT INTO transfers (transfer_id, package_id, next_hop, recipients, state,"
                    " created_at, since, next_attempt_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        tid,
                        package_id,
                        hop,
                        json.dumps(list(recipients)),
                        TransferState.QUEUED.value,
                        now,
                        now,
                        now,
                        now,
                    ),
                )
                await tx.log(now, "transfer", tid, None, TransferState.QUEUED, f"to {hop}")
                ids.append(tid)
            return ids

        return await self._write(op)

    async def queued_transfers(self) -> list[tuple[str, str, tuple[str, ...]]]:
        """``(transfer_id, next_hop, recipients)`` of every queued transfer (not in flight)."""
        rows = await self._rows(
            "SELECT transfer_id, next_hop, recipients FROM transfers WHERE state = 'queued'"
        )
        return [(r[0], r[1], tuple(json.loads(r[2]))) for r in rows]

    async def retarget(
        self, transfer_id: str, next_hop: str, recipients: Sequence[str], now: float
    ) -> bool:
        """Send a still-queued transfer to another next hop; False when it is no longer queued."""

        async def op(tx: _Tx) -> bool:
            row = await tx.one(
                "SELECT next_hop FROM transfers WHERE transfer_id = ? AND state = 'queued'",
                (transfer_id,),
            )
            if row is None:
                return False
            await tx.run(
                "UPDATE transfers SET next_hop = ?, recipients = ?, next_attempt_at = ?,"
                " updated_at = ? WHERE transfer_id = ?",
                (next_hop, json.dumps(list(recipients)), now, now, transfer_id),
            )
            detail = f"re-routed from {row[0]} to {next_hop}"
            await tx.log(now, "transfer", transfer_id, "queued", "queued", detail)
            return True

        return await self._write(op)

    async def open_transfers(self) -> list[OpenTransfer]:
        """Every transfer queued, in flight or dead (what a new directory may re-route)."""
        rows = await self._rows(
            "SELECT transfer_id, package_id, next_hop, recipients, state FROM transfers"
            " WHERE state IN ('queued', 'in_flight', 'dead') ORDER BY created_at"
        )
        return [
            OpenTransfer(r[0], r[1], r[2], tuple(json.loads(r[3])), TransferState(r[4]))
            for r in rows
        ]

    async def reroute(
        self,
        transfer_id: str,
        local: Sequence[str],
        hops: Mapping[str, Sequence[str]],
        now: float,
        detail: str = "",
    ) -> Rerouted | None:
        """Replace a queued or dead transfer by what the directory in force says, in one
        transaction: the transfer becomes ``rerouted``, each of ``hops`` gets a new queued
        transfer with its recipients (a dead transfer's age count starts again, like a
        requeue), and each of ``local`` an inbox entry here (the caller has verified the
        package). None, changing nothing, when the transfer is no longer queued or dead
        (taken meanwhile: it is re-routed after it comes back)."""

        async def op(tx: _Tx) -> Rerouted | None:
            row = await tx.one(
                "SELECT package_id, next_hop, state, created_at, since FROM transfers"
                " WHERE transfer_id = ?",
                (transfer_id,),
            )
            if row is None:
                raise UnknownId(f"no transfer {transfer_id}")
            if row["state"] not in (TransferState.QUEUED, TransferState.DEAD):
                return None
            pid, old = str(row["package_id"]), str(row["next_hop"])
            parts = [f"delivered here to {', '.join(local)}"] if local else []
            parts += [f"to {hop} ({', '.join(rs)})" for hop, rs in hops.items()]
            what = "; ".join(parts) or "no recipient left"
            await tx.move(
                "transfer",
                transfer_id,
                TransferState.REROUTED,
                now,
                f"re-routed from {old}: {what}{f' ({detail})' if detail else ''}",
                {"lease_token": None},
            )
            since = row["since"] if row["state"] == TransferState.QUEUED else now
            created: dict[str, str] = {}
            for hop, recipients in hops.items():
                tid = uuid.uuid4().hex
                await tx.run(
                    "INSERT INTO transfers (transfer_id, package_id, next_hop, recipients, state,"
                    " created_at, since, next_attempt_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
                    (
                        tid,
                        pid,
                        hop,
                        json.dumps(list(recipients)),
                        TransferState.QUEUED.value,
                        row["created_at"],
                        since,
                        now,
                        now,
                    ),
                )
                await tx.log(
                    now, "transfer", tid, None, TransferState.QUEUED, f"to {hop}, re-routed {old}"
                )
                created[hop] = tid
            delivered = []
            for recipient in local:
                added = await tx.run(
                    "INSERT OR IGNORE INTO inbox (package_id, recipient, state, added_at)"
                    " VALUES (?,?,?,?)",
                    (pid, recipient, InboxState.NEW.value, now),
                )
                if added:
                    await tx.log(now, "inbox", f"{pid}:{recipient}", None, InboxState.NEW)
                    delivered.append(recipient)
            await _revive_package(tx, pid, now)
            await _maybe_done(tx, pid, now)
            return Rerouted(created, tuple(delivered))

        return await self._write(op)

    async def lease_transfer(self, next_hop: str | None, now: float) -> Lease | None:
        """Take the next due transfer and count the attempt, in one transaction."""
        policy = self.settings.retry

        async def op(tx: _Tx) -> Lease | None:
            while True:
                row = await tx.one(
                    "SELECT transfer_id, state, attempts, since FROM transfers"
                    " WHERE ((state = 'queued' AND next_attempt_at <= ?)"
                    "    OR (state = 'in_flight' AND lease_expires_at <= ?))"
                    " AND (? IS NULL OR next_hop = ?) ORDER BY next_attempt_at LIMIT 1",
                    (now, now, next_hop, next_hop),
                )
                if row is None:
                    return None
                tid, attempts = str(row["transfer_id"]), int(row["attempts"])
                if row["state"] == TransferState.IN_FLIGHT:
                    error = f"lease ran out during attempt {attempts} (sender lost)"
                    decision = retry.decide(policy, attempts, row["since"], now, error, self._rng)
                    if decision.dead:
                        await tx.move(
                            "transfer",
                            tid,
                            TransferState.DEAD,
                            now,
                            decision.reason,
                            {"last_error": decision.reason, "lease_token": None},
                        )
                        continue
                    await tx.move(
                        "transfer",
                        tid,
                        TransferState.QUEUED,
                        now,
                        error,
                        {"last_error": error, "lease_token": None},
                    )
                token = uuid.uuid4().hex
                expires = now + self.settings.lease_s
                await tx.move(
                    "transfer",
                    tid,
                    TransferState.IN_FLIGHT,
                    now,
                    f"attempt {attempts + 1}",
                    {"attempts": attempts + 1, "lease_token": token, "lease_expires_at": expires},
                )
                full = await tx.one(
                    "SELECT t.*, p.kind, p.document_id FROM transfers t"
                    " JOIN packages p USING (package_id) WHERE transfer_id = ?",
                    (tid,),
                )
                assert full is not None
                return Lease(
                    tid,
                    full["package_id"],
                    full["next_hop"],
                    tuple(json.loads(full["recipients"])),
                    full["kind"],
                    full["document_id"],
                    full["package_id"],
                    attempts + 1,
                    token,
                    expires,
                )

        return await self._write(op)

    async def ack(self, transfer_id: str, sha256: str, now: float, by: str | None = None) -> bool:
        """Record the hop receipt; False if it was acknowledged already."""

        async def op(tx: _Tx) -> bool:
            row = await tx.one(
                "SELECT t.state, t.next_hop, t.package_id, p.document_id FROM transfers t"
                " JOIN packages p USING (package_id) WHERE transfer_id = ?",
                (transfer_id,),
            )
            if row is None:
                raise UnknownId(f"hop receipt for unknown transfer {transfer_id}")
            if by is not None and by != row["next_hop"]:
                raise WrongPeer(
                    f"hop receipt for transfer {transfer_id} from {by};"
                    f" it was sent to {row['next_hop']}"
                )
            if row["package_id"] != sha256:
                raise DigestMismatch(
                    f"hop receipt for transfer {transfer_id} names sha256 {sha256}, "
                    f"the package is {row['package_id']}"
                )
            if row["state"] == TransferState.ACKED:
                return False
            await tx.move(
                "transfer",
                transfer_id,
                TransferState.ACKED,
                now,
                f"hop receipt from {row['next_hop']}",
                {"lease_token": None},
            )
            await _add_receipt(
                tx, Receipt(row["document_id"], "hop", "stored", row["next_hop"], now, transfer_id)
            )
            await _maybe_done(tx, row["package_id"], now)
            return True

        return await self._write(op)

    async def fail(self, lease: Lease, error: str, now: float) -> FailResult:
        """Schedule a retry of the leased transfer, or dead-letter it."""
        policy = self.settings.retry

        async def op(tx: _Tx) -> FailResult:
            row = await tx.one(
                "SELECT state, lease_token, attempts, since FROM transfers WHERE transfer_id = ?",
                (lease.transfer_id,),
            )
            if row is None:
                raise UnknownId(f"no transfer {lease.transfer_id}")
            if row["state"] != TransferState.IN_FLIGHT or row["lease_token"] != lease.token:
                return FailResult(FailOutcome.STALE)
            decision = retry.decide(policy, row["attempts"], row["since"], now, error, self._rng)
            if decision.dead:
                await tx.move(
                    "transfer",
                    lease.transfer_id,
                    TransferState.DEAD,
                    now,
                    decision.reason,
                    {"last_error": decision.reason, "lease_token": None},
                )
                return FailResult(FailOutcome.DEAD)
            await tx.move(
                "transfer",
                lease.transfer_id,
                TransferState.QUEUED,
                now,
                error,
                {
                    "last_error": error,
                    "lease_token": None,
                    "next_attempt_at": decision.next_attempt_at,
                },
            )
            return FailResult(FailOutcome.RETRY, decision.next_attempt_at)

        return await self._write(op)

    async def dead_letters(self) -> list[DeadLetter]:
        """Dead transfers and expired packages with their reasons, oldest first."""
        transfers = await self._rows(
            "SELECT t.*, p.document_id FROM transfers t JOIN packages p USING (package_id)"
            " WHERE t.state = 'dead' ORDER BY t.updated_at"
        )
        packages = await self._rows(
            "SELECT * FROM packages WHERE state = 'expired' ORDER BY updated_at"
        )
        out = [
            DeadLetter(
                "transfer",
                r["transfer_id"],
                r["package_id"],
                r["document_id"],
                r["next_hop"],
                r["attempts"],
                r["last_error"] or "",
                r["updated_at"],
            )
            for r in transfers
        ]
        out += [
            DeadLetter(
                "package",
                r["package_id"],
                r["package_id"],
                r["document_id"],
                None,
                0,
                r["reason"] or "",
                r["updated_at"],
            )
            for r in packages
        ]
        return out

    async def requeue(self, item_id: str | None, now: float) -> int:
        """Put a dead transfer or expired package (or, with None, all of them) back in the queue."""

        async def op(tx: _Tx) -> int:
            if item_id is None:
                tids = [
                    r[0]
                    for r in await tx.all("SELECT transfer_id FROM transfers WHERE state = 'dead'")
                ]
                pids = [
                    r[0]
                    for r in await tx.all("SELECT package_id FROM packages WHERE state = 'expired'")
                ]
            else:
                tids, pids = await _dead_item(tx, item_id)
            count = 0
            for tid in tids:
                await _requeue_transfer(tx, tid, now)
                count += 1
            for pid in pids:
                row = await tx.one("SELECT state FROM packages WHERE package_id = ?", (pid,))
                if row is not None and row[0] == PackageState.EXPIRED:
                    dead = [
                        r[0]
                        for r in await tx.all(
                            "SELECT transfer_id FROM transfers"
                            " WHERE package_id = ? AND state = 'dead'",
                            (pid,),
                        )
                    ]
                    for tid in dead:
                        await _requeue_transfer(tx, tid, now)
                    await _revive_package(tx, pid, now)
                    count += 1
            return count

        return await self._write(op)

    async def expire(self, now: float) -> Expired:
        """Dead-letter packages older than ``package_max_age_s`` and queued transfers older
        than ``retry.max_age_s``; nothing is deleted."""
        package_cutoff = now - self.settings.package_max_age_s
        transfer_cutoff = now - self.settings.retry.max_age_s
        states = tuple(s.value for s in PACKAGE_EXPIRABLE)
        in_states = ",".join("?" * len(states))

        async def op(tx: _Tx) -> Expired:
            old = [
                r[0]
                for r in await tx.all(
                    f"SELECT package_id FROM packages WHERE state IN ({in_states})"  # noqa: S608
                    " AND since <= ?",
                    (*states, package_cutoff),
                )
            ]
            dead: list[str] = []
            for pid in old:
                reason = f"package expired: older than {self.settings.package_max_age_s:g} s"
                for (tid,) in await tx.all(
                    "SELECT transfer_id FROM transfers WHERE package_id = ?"
                    " AND state IN ('queued', 'in_flight')",
                    (pid,),
                ):
                    await tx.move(
                        "transfer",
                        tid,
                        TransferState.DEAD,
                        now,
                        reason,
                        {"last_error": reason, "lease_token": None},
                    )
                    dead.append(tid)
                await tx.move("package", pid, PackageState.EXPIRED, now, reason, {"reason": reason})
            for (tid,) in await tx.all(
                "SELECT transfer_id FROM transfers WHERE state = 'queued' AND since <= ?",
                (transfer_cutoff,),
            ):
                reason = f"transfer expired: queued longer than {self.settings.retry.max_age_s:g} s"
                await tx.move(
                    "transfer", tid, TransferState.DEAD, now, reason, {"last_error": reason}
                )
                dead.append(tid)
            return Expired(tuple(old), tuple(dead))

        return await self._write(op)

    # -- inbox and receipts ---------------------------------------------------------------

    async def inbox_add(self, package_id: str, recipients: Sequence[str], now: float) -> None:
        """Deliver a verified package to local recipients."""

        async def op(tx: _Tx) -> None:
            await tx.move("package", package_id, PackageState.DELIVERED, now, ", ".join(recipients))
            for recipient in recipients:
                await tx.run(
                    "INSERT INTO inbox (package_id, recipient, state, added_at) VALUES (?,?,?,?)",
                    (package_id, recipient, InboxState.NEW.value, now),
                )
                await tx.log(now, "inbox", f"{package_id}:{recipient}", None, InboxState.NEW)

        await self._write(op)

    async def inbox_list(
        self, recipient: str | None = None, pending: bool = True
    ) -> list[InboxEntry]:
        """Inbox entries, oldest first."""
        rows = await self._rows(
            _INBOX_SELECT + " WHERE (? IS NULL OR recipient = ?)"
            " AND (? = 0 OR i.state NOT IN ('done', 'revoked'))"
            " ORDER BY entry_id",
            (recipient, recipient, int(pending)),
        )
        return [_inbox_entry(r) for r in rows]

    async def inbox_entry(self, entry_id: int) -> InboxEntry | None:
        """The inbox entry ``entry_id`` in any state, or None when there is none."""
        row = await self._row(_INBOX_SELECT + " WHERE entry_id = ?", (entry_id,))
        return _inbox_entry(row) if row is not None else None

    async def inbox_ack(self, entry_id: int, ok: bool, now: float, detail: str = "") -> None:
        """Record the office software's retrieval (or its failure) of an inbox entry."""

        async def op(tx: _Tx) -> None:
            row = await tx.one(
                "SELECT i.package_id, i.recipient, i.state, p.document_id FROM inbox i"
                " JOIN packages p USING (package_id) WHERE entry_id = ?",
                (entry_id,),
            )
            if row is None:
                raise UnknownId(f"no inbox entry {entry_id}")
            if row["state"] in (InboxState.DONE, InboxState.REVOKED):
                return  # retrieved or revoked already: a repeated acknowledgement changes nothing
            to_state = InboxState.DONE if ok else InboxState.FAILED
            await tx.move("inbox entry", entry_id, to_state, now, detail)
            await _add_receipt(
                tx,
                Receipt(
                    row["document_id"],
                    "retrieval",
                    "done" if ok else "fail",
                    row["recipient"],
                    now,
                    detail,
                ),
            )
            await _maybe_done(tx, row["package_id"], now)

        await self._write(op)

    async def inbox_revoke(
        self, document_id: str, recipient: str, now: float, reason: str = ""
    ) -> int:
        """Mark the document's entries for ``recipient`` revoked; how many changed."""

        async def op(tx: _Tx) -> int:
            rows = await tx.all(
                "SELECT i.entry_id, i.package_id FROM inbox i JOIN packages p USING (package_id)"
                " WHERE p.document_id = ? AND i.recipient = ? AND p.kind = 'edoc'"
                " AND i.state != 'revoked'",
                (document_id, recipient),
            )
            for row in rows:
                await tx.move("inbox entry", row["entry_id"], InboxState.REVOKED, now, reason)
                await _maybe_done(tx, row["package_id"], now)
            return len(list(rows))

        return await self._write(op)

    async def record_receipt(self, receipt: Receipt) -> None:
        """Record a receipt for its document."""

        async def op(tx: _Tx) -> None:
            await _add_receipt(tx, receipt)

        await self._write(op)

    async def receipts(self, document_id: str) -> list[Receipt]:
        """Receipts about ``document_id``, oldest first."""
        rows = await self._rows(
            "SELECT * FROM receipts WHERE document_id = ? ORDER BY at, id", (document_id,)
        )
        return [
            Receipt(r["document_id"], r["level"], r["code"], r["by"], r["at"], r["detail"])
            for r in rows
        ]

    async def conflicts(self) -> list[Conflict]:
        """Transfers that came again with other bytes."""
        rows = await self._rows("SELECT * FROM conflicts ORDER BY id")
        return [
            Conflict(
                r["transfer_id"],
                r["from_peer"],
                r["stored_sha256"],
                r["other_sha256"],
                r["quarantined"],
                r["at"],
            )
            for r in rows
        ]

    # -- views -----------------------------------------------------------------------------

    async def queue_summary(self, now: float) -> QueueSummary:
        """Counts per state and next hop, and the oldest waiting transfer."""
        packages = {
            r[0]: r[1]
            for r in await self._rows("SELECT state, count(*) FROM packages GROUP BY state")
        }
        transfers: dict[str, int] = {}
        per_hop: dict[str, dict[str, int]] = {}
        for hop, state, n in await self._rows(
            "SELECT next_hop, state, count(*) FROM transfers GROUP BY next_hop, state"
        ):
            transfers[state] = transfers.get(state, 0) + n
            per_hop.setdefault(hop, {})[state] = n
        oldest = await self._row(
            "SELECT transfer_id, next_hop, state, created_at FROM transfers"
            " WHERE state IN ('queued', 'in_flight') ORDER BY created_at LIMIT 1"
        )
        dup = await self._row("SELECT coalesce(sum(duplicates), 0) FROM received")
        conflicts = await self._row("SELECT count(*) FROM conflicts")
        oldest_per_hop = {
            hop: now - created
            for hop, created in await self._rows(
                "SELECT next_hop, min(created_at) FROM transfers"
                " WHERE state IN ('queued', 'in_flight') GROUP BY next_hop"
            )
        }
        return QueueSummary(
            packages,
            transfers,
            per_hop,
            OldestWaiting(oldest[0], oldest[1], TransferState(oldest[2]), now - oldest[3])
            if oldest
            else None,
            int(dup[0]) if dup else 0,
            int(conflicts[0]) if conflicts else 0,
            oldest_per_hop,
        )

    async def journal_verify(self) -> JournalReport:
        """Check the journal's hash chain and head."""
        rows = await self._rows("SELECT * FROM journal ORDER BY seq")
        head = await self._row("SELECT seq, hash FROM journal_head WHERE id = 1")
        entries = (
            JournalEntry(
                r["seq"],
                r["at"],
                r["entity"],
                r["entity_id"],
                r["from_state"],
                r["to_state"],
                r["detail"],
                r["prev_hash"],
                r["hash"],
            )
            for r in rows
        )
        return verify_chain(entries, (int(head[0]), str(head[1])) if head else None)


# -- operations shared by several methods -----------------------------------------------------


async def _migrate(db: aiosqlite.Connection) -> None:
    from lienthong.store.schema import MIGRATIONS

    async with db.execute("PRAGMA user_version") as cur:
        row = await cur.fetchone()
    version = int(row[0]) if row else 0
    if version > len(MIGRATIONS):
        raise StoreTransientError(
            f"database schema version {version} is newer than this lienthong knows "
            f"({len(MIGRATIONS)}): upgrade lienthong"
        )
    for number in range(version, len(MIGRATIONS)):
        await db.executescript(
            f"BEGIN IMMEDIATE; {MIGRATIONS[number]}; PRAGMA user_version = {number + 1}; COMMIT;"
        )


async def _insert_package(
    tx: _Tx, meta: PackageMeta, from_peer: str | None, before: PackageState, now: float
) -> None:
    pid = meta.sha256
    check("package", pid, before, PackageState.STORED)
    await tx.run(
        "INSERT INTO packages VALUES (?,?,?,?,?,?,?,?,NULL,?,?,?)",
        (
            pid,
            meta.document_id,
            meta.kind,
            meta.sender,
            json.dumps(list(meta.recipients)),
            meta.size,
            from_peer,
            PackageState.STORED.value,
            now,
            now,
            now,
        ),
    )
    origin = f"from {from_peer}" if from_peer else "submitted here"
    await tx.log(
        now, "package", pid, before, PackageState.STORED, f"{meta.kind} {meta.document_id} {origin}"
    )


async def _add_receipt(tx: _Tx, r: Receipt) -> None:
    await tx.run(
        "INSERT INTO receipts (document_id, level, code, by, at, detail) VALUES (?,?,?,?,?,?)",
        (r.document_id, r.level, r.code, r.by, r.at, r.detail),
    )
    await tx.log(r.at, "receipt", r.document_id, None, f"{r.level} {r.code}", f"by {r.by}")


_INBOX_SELECT = (
    "SELECT i.*, p.document_id, p.kind, p.sender FROM inbox i JOIN packages p USING (package_id)"
)


def _inbox_entry(r: sqlite3.Row) -> InboxEntry:
    return InboxEntry(
        r["entry_id"],
        r["package_id"],
        r["document_id"],
        r["kind"],
        r["sender"],
        r["recipient"],
        r["state"],
        r["added_at"],
    )


async def _maybe_done(tx: _Tx, package_id: str, now: float) -> None:
    """Mark the package done once every transfer is acknowledged and every entry retrieved."""
    row = await tx.one(
        "SELECT state,"
        " (SELECT count(*) FROM transfers WHERE package_id = p.package_id"
        "  AND state NOT IN ('acked', 'rerouted')),"
        " (SELECT count(*) FROM inbox WHERE package_id = p.package_id"
        "  AND state NOT IN ('done', 'revoked'))"
        " FROM packages p WHERE package_id = ?",
        (package_id,),
    )
    assert row is not None
    if row[0] in (PackageState.ROUTED, PackageState.DELIVERED, PackageState.EXPIRED) and (
        row[1] == 0 and row[2] == 0
    ):
        await tx.move("package", package_id, PackageState.DONE, now)


async def _dead_item(tx: _Tx, item_id: str) -> tuple[list[str], list[str]]:
    """The dead transfer or expired package named ``item_id``, or :class:`UnknownId`."""
    row = await tx.one("SELECT state FROM transfers WHERE transfer_id = ?", (item_id,))
    if row is not None:
        if row[0] != TransferState.DEAD:
            raise UnknownId(f"transfer {item_id} is {row[0]}, not dead: nothing to requeue")
        return [item_id], []
    row = await tx.one("SELECT state FROM packages WHERE package_id = ?", (item_id,))
    if row is not None:
        if row[0] != PackageState.EXPIRED:
            raise UnknownId(f"package {item_id} is {row[0]}, not expired: nothing to requeue")
        return [], [item_id]
    raise UnknownId(f"no dead transfer or expired package with id {item_id}")


async def _requeue_transfer(tx: _Tx, tid: str, now: float) -> None:
    await tx.move(
        "transfer",
        tid,
        TransferState.QUEUED,
        now,
        "requeued",
        {"attempts": 0, "since": now, "next_attempt_at": now},
    )
    row = await tx.one(
        "SELECT p.package_id, p.state FROM transfers t JOIN packages p USING (package_id)"
        " WHERE transfer_id = ?",
        (tid,),
    )
    if row is not None and row[1] == PackageState.EXPIRED:
        await _revive_package(tx, row[0], now)


async def _revive_package(tx: _Tx, pid: str, now: float) -> None:
    row = await tx.one("SELECT state FROM packages WHERE package_id = ?", (pid,))
    if row is None or row[0] != PackageState.EXPIRED:
        return
    has_transfers = await tx.one("SELECT 1 FROM transfers WHERE package_id = ?", (pid,))
    to_state = PackageState.ROUTED if has_transfers else PackageState.STORED
    await tx.move("package", pid, to_state, now, "requeued", {"since": now})


def _package_record(r: sqlite3.Row) -> PackageRecord:
    meta = PackageMeta(
        r["document_id"],
        r["kind"],
        r["sender"],
        tuple(json.loads(r["recipients"])),
        r["package_id"],
        r["size"],
    )
    return PackageRecord(
        r["package_id"],
        meta,
        PackageState(r["state"]),
        r["from_peer"],
        r["created_at"],
        r["updated_at"],
        r["reason"],
    )
