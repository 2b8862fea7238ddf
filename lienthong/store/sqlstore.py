"""What the SQL stores share: every store operation, written once, and the grouped writer.

:class:`SqlStore` implements the whole :class:`~lienthong.store.base.Store` protocol over an
engine that a subclass provides (:class:`~lienthong.store.sqlite.SqliteStore`,
:class:`~lienthong.store.postgres.PostgresStore`). An operation that changes state is a plain,
synchronous function of a :class:`Tx`, the open write transaction: it reads and writes with
``one``, ``all`` and ``run``, moves rows along their life cycle with :meth:`Tx.move` (checked by
:mod:`lienthong.store.lifecycle`, guarded by the state read) and journals with :meth:`Tx.log`
(chained by :mod:`lienthong.store.journal`). One writer task groups the operations waiting (up
to ``group_commit_max_batch``, waiting up to ``group_commit_max_wait_ms`` for more) and hands
the batch to the engine (``_commit``; by default ``_run_batch`` in its database thread): one
transaction, the operations in one savepoint (each in its own when one of them refuses, see
:func:`run_ops`), their journal entries in one statement, one commit; only then are the
callers' futures resolved.

The SQL is written once, in the dialect both engines speak: ``?`` placeholders (the
PostgreSQL engine numbers them), ``ON CONFLICT DO NOTHING``, ``CAST(? AS TEXT)`` where a
parameter's type cannot be inferred, and the column ``"by"`` quoted.

The engine provides: opening and closing, ``_run_batch`` (in ``_write_thread``, or its own
``_commit``), the reads
(``_rows``, ``_read_many``, ``_read_bytes``), where package bytes live (``_inline``,
``_file_blobs``) and the probe of :meth:`resume_intake` (``_probe``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
import secrets
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, NoReturn, Protocol, Self, TypeVar

from lienthong.config import StoreSettings
from lienthong.errors import LienthongError
from lienthong.logs import get_logger
from lienthong.store import retry
from lienthong.store.blobs import write_durably
from lienthong.store.errors import (
    CorruptPackage,
    DigestMismatch,
    IntakeBlocked,
    StoreTransientError,
    UnknownId,
    WrongPeer,
)
from lienthong.store.journal import (
    EntryRow,
    JournalEntry,
    JournalReport,
    entry_row,
    verify_chain,
)
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
    PackageSource,
    QueueSummary,
    Receipt,
    ReceiveOutcome,
    ReceiveResult,
    Reply,
    Rerouted,
)
from lienthong.store.takes import AHEAD, Takes

T = TypeVar("T")
_log = get_logger("lienthong.store")
RECENT_MAX_BYTES = 16 * 1024 * 1024
"""Bytes of lately stored packages kept in memory for sending them on."""
_TABLE_OF = {"package": ("packages", "package_id"), "transfer": ("transfers", "transfer_id")}
_TABLE_OF["inbox entry"] = ("inbox", "entry_id")
_PACKAGE_COLUMNS = (
    "package_id, document_id, kind, sender, recipients, size, from_peer, state, reason,"
    " created_at, since, updated_at"
)
"""Every column of a package but its inline bytes (records never carry those)."""


class Row(Protocol):
    """A result row of either engine: by column name or position."""

    def __getitem__(self, key: int | str, /) -> Any: ...

    def __iter__(self) -> Iterator[Any]: ...


Query = tuple[str, Sequence[Any]]
"""A statement and its parameters."""


class Tx:
    """One operation's view of the open write transaction, with the journal head.

    Runs where the engine runs the batch (its database thread, or the event loop): every call
    is a plain, synchronous statement. Journal entries are kept in :attr:`entries` until
    :func:`run_ops` writes those of the batch's operations together (nothing reads the journal
    inside a write).
    """

    def __init__(self, head: tuple[int, str]) -> None:
        self.head = head
        self.entries: list[EntryRow] = []

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        """The first row of ``sql``, or None."""
        raise NotImplementedError

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        """Every row of ``sql``."""
        raise NotImplementedError

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Execute ``sql``; how many rows it changed."""
        raise NotImplementedError

    def log(
        self,
        at: float,
        entity: str,
        entity_id: str,
        from_state: str | None,
        to_state: str,
        detail: str = "",
    ) -> None:
        """Append a journal entry chained to the current head (written by :func:`run_ops`)."""
        row = entry_row(self.head, at, entity, entity_id, from_state, to_state, detail)
        self.entries.append(row)
        self.head = (row[0], row[-1])

    def move(
        self,
        entity: str,
        entity_id: str | int,
        to_state: str,
        now: float,
        detail: str = "",
        sets: Mapping[str, Any] | None = None,
        *,
        expect: str | None = None,
    ) -> str:
        """Check and apply one state change (guarded by the state read); the old state.

        ``expect``: the state the caller has just read in this transaction (or is sure of),
        which saves reading it again; if the row is not in that state after all, the state is
        read and the change refused as it would have been."""
        table, key = _TABLE_OF[entity]
        from_state = expect if expect is not None else self._state(entity, entity_id)
        check(entity, str(entity_id), from_state, to_state)
        columns = {"state": to_state, **(sets or {})}
        if entity != "inbox entry":
            columns["updated_at"] = now
        assignments = ", ".join(f"{c} = ?" for c in columns)
        changed = self.run(
            f"UPDATE {table} SET {assignments} WHERE {key} = ? AND state = ?",  # noqa: S608
            (*columns.values(), entity_id, from_state),
        )
        if changed != 1:
            if expect is not None:
                actual = self._state(entity, entity_id)  # UnknownId when there is no such row
                check(entity, str(entity_id), actual, to_state)
            raise ConcurrentChange(entity, str(entity_id), from_state, to_state)
        self.log(now, entity, str(entity_id), from_state, to_state, detail)
        return from_state

    def _state(self, entity: str, entity_id: str | int) -> str:
        """The state of ``entity`` ``entity_id`` now, or :class:`UnknownId`."""
        table, key = _TABLE_OF[entity]
        row = self.one(f"SELECT state FROM {table} WHERE {key} = ?", (entity_id,))  # noqa: S608
        if row is None:
            raise UnknownId(f"no {entity} {entity_id}")
        return str(row[0])


Op = Callable[[Tx], T]


@dataclass
class Pending:
    op: Op[Any]
    future: asyncio.Future[Any]
    blobs: tuple[tuple[str, PackageSource], ...] = ()  # (sha256, bytes or file) it refers to
    durable: bool = True  # False: may be lost on power loss (see the module docstring)
    keeps_queue: bool = False  # True: moves no queued transfer elsewhere (see _write)


Outcome = tuple[bool, Any]
"""``(True, result)`` or ``(False, exception)`` of one operation of a batch."""


JOURNAL_INSERT = "INSERT INTO journal VALUES (?,?,?,?,?,?,?,?,?)"
"""The statement :func:`run_ops` runs once per batch for the entries of :attr:`Tx.entries`."""


class _Refused(Exception):
    """An operation of a batch run without savepoints of its own refused (the cause chained)."""


def run_ops(
    batch: Sequence[Pending],
    head: tuple[int, str],
    tx_at: Callable[[tuple[int, str]], Tx],
    execute: Callable[[str], object],
    engine_errors: type[Exception] | tuple[type[Exception], ...],
    insert_many: Callable[[str, list[tuple[Any, ...]]], object],
) -> tuple[list[Outcome], tuple[int, str]]:
    """Run the operations of ``batch`` in the open transaction, chaining the journal from
    ``head``; each outcome and the new head. The journal entries of the operations that
    succeed are written at the end with one ``insert_many(JOURNAL_INSERT, rows)``.

    An operation's own refusal (any exception but ``engine_errors``) undoes that operation
    alone; an engine error propagates (the caller rolls the batch back). The batch first runs
    in one savepoint; only when an operation refuses is that undone and the batch run again
    with each operation in a savepoint of its own (two statements per operation, which a batch
    that goes through saves).
    """
    execute("SAVEPOINT batch")
    try:
        outcomes, end, rows = _run_each(batch, head, tx_at, execute, engine_errors, alone=False)
    except _Refused:
        execute("ROLLBACK TO SAVEPOINT batch")
        outcomes, end, rows = _run_each(batch, head, tx_at, execute, engine_errors, alone=True)
    execute("RELEASE SAVEPOINT batch")
    if rows:
        insert_many(JOURNAL_INSERT, rows)
    return outcomes, end


def _run_each(
    batch: Sequence[Pending],
    head: tuple[int, str],
    tx_at: Callable[[tuple[int, str]], Tx],
    execute: Callable[[str], object],
    engine_errors: type[Exception] | tuple[type[Exception], ...],
    *,
    alone: bool,
) -> tuple[list[Outcome], tuple[int, str], list[tuple[Any, ...]]]:
    """Each operation in turn; ``alone``: each in its own savepoint, a refusal its outcome,
    else a refusal raises :class:`_Refused`. Engine errors propagate as they are."""
    outcomes: list[Outcome] = []
    rows: list[tuple[Any, ...]] = []
    for item in batch:
        tx = tx_at(head)
        if alone:
            execute("SAVEPOINT op")
        try:
            result = item.op(tx)
        except engine_errors:
            raise
        except Exception as exc:  # the operation's own refusal
            if not alone:
                raise _Refused from exc
            execute("ROLLBACK TO SAVEPOINT op")
            execute("RELEASE SAVEPOINT op")
            outcomes.append((False, exc))
            continue
        if alone:
            execute("RELEASE SAVEPOINT op")
        head = tx.head
        rows += tx.entries
        outcomes.append((True, result))
    return outcomes, head, rows


class SqlStore:
    """The :class:`~lienthong.store.base.Store` over an SQL engine a subclass provides."""

    def __init__(
        self,
        state_dir: Path,
        settings: StoreSettings | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.state_dir = state_dir
        self.settings = settings or StoreSettings()
        self._quarantine = state_dir / "quarantine"
        self._rng = rng or random.Random()
        self._write_thread: ThreadPoolExecutor | None = None
        self._queue: asyncio.Queue[Pending | None] = asyncio.Queue()
        self._more = asyncio.Event()
        self.commits = 0  # batches handed to the engine, for the benchmarks and tests
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._takes = Takes()
        self._recent_bytes = 0
        self._task: asyncio.Task[None] | None = None
        self._retry_task: asyncio.Task[None] | None = None
        self._blocked: str | None = None

    # -- what the engine provides ------------------------------------------------------------

    async def open(self) -> None:
        """Open (creating or migrating as needed), then :meth:`_start`."""
        raise NotImplementedError

    async def close(self) -> None:
        """:meth:`_stop`, then close the connections."""
        raise NotImplementedError

    def _run_batch(self, batch: list[Pending]) -> list[Outcome]:
        """Run the batch in one transaction (in ``_write_thread``); each op's outcome."""
        raise NotImplementedError

    async def _commit(self, batch: list[Pending]) -> list[Outcome]:
        """Run the batch in one transaction and make it as durable as its operations ask;
        each op's outcome. By default :meth:`_run_batch` in ``_write_thread``; an engine may
        run some batches another way."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._write_thread, self._run_batch, batch)

    async def _read_many(self, queries: Sequence[Query]) -> list[list[Row]]:
        """The rows of each query, read in one call on committed data."""
        raise NotImplementedError

    async def _read_few(self, queries: Sequence[Query]) -> list[list[Row]]:
        """:meth:`_read_many` for queries that read a few rows through an index, on the
        path of every transfer; an engine may read those where it costs least."""
        return await self._read_many(queries)

    async def _read_bytes(self, package_id: str) -> bytes:
        """The stored bytes of a package, or :class:`UnknownId`."""
        raise NotImplementedError

    keeps_files = False
    """True when the engine keeps large packages in files (a file given is then adopted, never
    read into memory); False when every package lives in its row."""

    def _inline(self, data: PackageSource) -> bytes | None:
        """``data`` when it lives in its row, else None (it gets a file)."""
        raise NotImplementedError

    def _file_blobs(
        self, blobs: Sequence[tuple[str, PackageSource]]
    ) -> tuple[tuple[str, PackageSource], ...]:
        """Of ``blobs`` (sha256, bytes or file), those the batch must write to files."""
        raise NotImplementedError

    async def package_file(self, package_id: str) -> Path | None:
        """The file of a stored package, or None when :meth:`read_package` reads it whole (it
        lives in its row, or is in memory). Every package of this engine lives in its row."""
        await self.get_package(package_id)  # UnknownId for an unknown one
        return None

    async def collect_orphans(self) -> int:
        """Remove package files no row names; how many (none: this engine keeps no files)."""
        return 0

    async def _probe(self) -> None:
        """Check what the store writes besides the database (raise StoreTransientError)."""
        raise NotImplementedError

    async def _rows(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        (rows,) = await self._read_many([(sql, params)])
        return rows

    async def _row(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        rows = await self._rows(sql, params)
        return rows[0] if rows else None

    def _start(self) -> None:
        """Start the writer task and the intake retry (the engine is open)."""
        self._task = asyncio.create_task(self._write_loop(), name="store-writer")
        self._retry_task = asyncio.create_task(self._retry_intake(), name="store-intake-retry")

    async def _stop(self) -> None:
        """Finish the writes already handed over; stop the tasks."""
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry_task
            self._retry_task = None
        if self._task is not None:
            self._queue.put_nowait(None)
            self._more.set()
            await self._task
            self._task = None

    # -- the protocol ------------------------------------------------------------------------

    @property
    def intake_blocked(self) -> str | None:
        """Why intake is stopped, or None."""
        return self._blocked

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    # -- the writer ----------------------------------------------------------------------

    async def _write(
        self,
        op: Op[T],
        blobs: Sequence[tuple[str, PackageSource]] = (),
        *,
        durable: bool = True,
        keeps_queue: bool = False,
    ) -> T:
        """Run ``op`` in the next grouped transaction; return once it is committed.

        ``blobs`` are package bytes ``(sha256, bytes)`` the op refers to; those too large to
        live in their row are written to files, made durable with the rest of the batch's files
        before the commit, unless a committed row already refers to them. If that fails the
        op's work is undone and it raises the file's error. ``durable=False`` marks
        bookkeeping that may be lost on power loss (its commit does not fsync by itself).
        ``keeps_queue`` marks an op that moves no queued transfer elsewhere (it may add some,
        or settle one in flight); any other drops the transfers read ahead (:mod:`.takes`).
        """
        # The operation commits even if this caller is cancelled while waiting: the writer
        # runs every operation handed over, whatever became of its future.
        return await self._submit(op, blobs, durable, keeps_queue=keeps_queue)

    def _submit(
        self,
        op: Op[T],
        blobs: Sequence[tuple[str, PackageSource]],
        durable: bool,
        *,
        keeps_queue: bool = False,
    ) -> asyncio.Future[T]:
        """Hand ``op`` to the writer now (writes run in the order handed over); its future."""
        if self._task is None:
            raise RuntimeError("store is not open")
        future: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        if not keeps_queue:
            self._takes.drop_ahead()  # and again once it has run (the writer does that)
        self._queue.put_nowait(
            Pending(op, future, self._file_blobs(blobs), durable, keeps_queue=keeps_queue)
        )
        self._more.set()
        return future

    def _remember(self, package_id: str, data: PackageSource) -> None:
        """Keep the bytes of a package being stored: it is usually sent on at once, and
        reading it back would cost trips to the reader's thread. Kept as the write is handed
        over, not once it is flushed: its transfers can be taken as soon as its rows are
        committed, before the flush that its caller waits for. Packages never change (their
        id is their digest, checked before this), so a copy is never stale, and one kept for
        a write that then fails is only memory (the oldest go first). A package in a file is
        not read for this."""
        if isinstance(data, Path):
            return
        if package_id in self._recent or len(data) > RECENT_MAX_BYTES // 4:
            return
        self._recent[package_id] = data
        self._recent_bytes += len(data)
        while self._recent_bytes > RECENT_MAX_BYTES:
            _, old = self._recent.popitem(last=False)
            self._recent_bytes -= len(old)

    async def _write_loop(self) -> None:
        max_batch = self.settings.group_commit_max_batch
        max_wait = self.settings.group_commit_max_wait_ms / 1000
        # Bookkeeping alone (no one is promised it) waits for a write that is: at light load
        # a transfer's take and hop receipt then ride on the commit of the next package
        # instead of costing a commit each.
        keep_wait = max(max_wait, self.settings.bookkeeping_wait_ms / 1000)
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await self._queue.get()
            if first is None:
                break
            batch = [first]
            deadline = loop.time() + (max_wait if first.durable else keep_wait)
            while len(batch) < max_batch:
                try:
                    item = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    remaining = deadline - loop.time()
                    if remaining <= 0:
                        break
                    self._more.clear()
                    # A timer, not wait_for: no task per wait (this runs for every batch).
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(remaining):
                            await self._more.wait()
                    continue
                if item is None:
                    stop = True
                    break
                batch.append(item)
                if item.durable:
                    deadline = min(deadline, loop.time() + max_wait)
            self.commits += 1
            # A batch that may move queued transfers elsewhere: no rows read ahead are used
            # while it commits and is flushed (its rows are visible to reads before that ends),
            # and none read before it once it has.
            moving = not all(item.keeps_queue for item in batch)
            if moving:
                self._takes.hold()
            try:
                outcomes = await self._commit(batch)
            except BaseException as exc:
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                raise
            finally:
                if moving:
                    self._takes.release()
            for item, (ok, value) in zip(batch, outcomes, strict=True):
                if item.future.done():
                    continue
                if ok:
                    item.future.set_result(value)
                else:
                    item.future.set_exception(value)

    # -- intake ----------------------------------------------------------------------------

    def _check_intake(self) -> None:
        if self._blocked is not None:
            raise IntakeBlocked(f"intake stopped: {self._blocked}")

    async def _intake(
        self,
        op: Op[T],
        blobs: Sequence[tuple[str, PackageSource]] = (),
        *,
        keeps_queue: bool = False,
    ) -> T:
        try:
            return await self._write(op, blobs, keeps_queue=keeps_queue)
        except StoreTransientError as exc:
            self._blocked = str(exc)
            raise

    async def resume_intake(self) -> bool:
        """Probe the disk and the database; clear :attr:`intake_blocked` if both work."""
        try:
            await self._probe()

            def nothing(tx: Tx) -> None:
                tx.one("SELECT 1")

            await self._write(nothing)
        except StoreTransientError as exc:
            self._blocked = str(exc)
            return False
        self._blocked = None
        return True

    async def _retry_intake(self) -> None:
        """While intake is stopped, try the disk and the database again every
        ``intake_retry_s``, so intake resumes by itself once the fault has cleared."""
        while True:
            await asyncio.sleep(self.settings.intake_retry_s)
            blocked = self._blocked
            if blocked is not None and await self.resume_intake():
                _log.info("intake_resumed", was=blocked)

    async def put_package(
        self, data: PackageSource, meta: PackageMeta, now: float
    ) -> tuple[str, bool]:
        """Store a package submitted here: ``(package_id, duplicate)``."""
        data = await self._small_in_memory(data, meta)
        self._check_intake()
        pid = meta.sha256

        def op(tx: Tx) -> bool:
            if tx.one("SELECT 1 FROM packages WHERE package_id = ?", (pid,)):
                return True
            _insert_package(tx, meta, self._inline(data), None, PackageState.SIGNED, now)
            return False

        self._remember(pid, data)
        duplicate = await self._intake(op, [(pid, data)], keeps_queue=True)
        return pid, duplicate

    async def _small_in_memory(self, data: PackageSource, meta: PackageMeta) -> PackageSource:
        """Bytes checked against ``meta``; a file read when it will live in its row (the caller
        checked it); any other file as it is, to be adopted."""
        if isinstance(data, Path):
            if self.keeps_files and meta.size >= self.settings.inline_max_bytes:
                return data
            data = await asyncio.to_thread(data.read_bytes)
        meta.check(data)
        return data

    async def receive(
        self,
        transfer_id: str,
        data: PackageSource,
        meta: PackageMeta,
        from_peer: str,
        now: float,
        hops: Mapping[str, Sequence[str]] | None = None,
    ) -> ReceiveResult:
        """Store a package from a neighbour, deduped by transfer id and digest; with ``hops``,
        also route it (its transfers queued) in the same transaction."""
        data = await self._small_in_memory(data, meta)
        self._check_intake()
        pid = meta.sha256

        def op(tx: Tx) -> ReceiveResult:
            seen = tx.one("SELECT sha256 FROM received WHERE transfer_id = ?", (transfer_id,))
            if seen is not None:
                if seen[0] != pid:
                    return ReceiveResult(ReceiveOutcome.CONFLICT, str(seen[0]))
                tx.run(
                    "UPDATE received SET duplicates = duplicates + 1 WHERE transfer_id = ?",
                    (transfer_id,),
                )
                return ReceiveResult(ReceiveOutcome.DUPLICATE, pid)
            known = tx.one("SELECT 1 FROM packages WHERE package_id = ?", (pid,))
            if not known:
                _insert_package(tx, meta, self._inline(data), from_peer, PackageState.RECEIVED, now)
                if hops:
                    _route(tx, pid, hops, now, expect=PackageState.STORED)
            tx.run(
                "INSERT INTO received VALUES (?,?,?,?,?,?)",
                (transfer_id, pid, from_peer, pid, now, 1 if known else 0),
            )
            outcome = ReceiveOutcome.DUPLICATE if known else ReceiveOutcome.NEW
            return ReceiveResult(outcome, pid)

        self._remember(pid, data)
        result = await self._intake(op, [(pid, data)], keeps_queue=True)
        if result.outcome is not ReceiveOutcome.CONFLICT:
            return result
        return await self._record_conflict(
            transfer_id, data, result.package_id, pid, from_peer, now
        )

    async def _record_conflict(
        self,
        transfer_id: str,
        data: PackageSource,
        stored: str,
        other: str,
        from_peer: str,
        now: float,
    ) -> ReceiveResult:
        path = self._quarantine / f"{transfer_id}.{other}"
        try:
            await asyncio.to_thread(
                write_durably, path, data, f"conflicting transfer {transfer_id}"
            )
        except StoreTransientError as exc:
            self._blocked = str(exc)
            raise

        def op(tx: Tx) -> None:
            tx.run(
                "INSERT INTO conflicts (transfer_id, from_peer, stored_sha256, other_sha256,"
                " quarantined, at) VALUES (?,?,?,?,?,?)",
                (transfer_id, from_peer, stored, other, str(path), now),
            )
            detail = f"from {from_peer}: sha256 {other}, had {stored}; kept at {path}"
            tx.log(now, "transfer-in", transfer_id, None, "conflict", detail)

        await self._intake(op)
        return ReceiveResult(ReceiveOutcome.CONFLICT, stored)

    # -- packages ---------------------------------------------------------------------------

    async def read_package(self, package_id: str) -> bytes:
        """The bytes of a stored package (from memory when it was stored lately, else from its
        row or its file, in one read)."""
        recent = self._recent.get(package_id)
        if recent is not None:
            return recent
        return await self._checked(package_id, await self._read_bytes(package_id))

    async def _checked(self, package_id: str, data: bytes) -> bytes:
        """``data``, read back from the store for ``package_id``, once it hashes to that id;
        else the package is quarantined and :class:`CorruptPackage` raised."""
        digest = hashlib.sha256(data).hexdigest()
        if digest != package_id:
            await self._quarantine_corrupt(package_id, digest)
        return data

    async def _quarantine_corrupt(self, package_id: str, digest: str) -> NoReturn:
        """Quarantine a package whose stored bytes hash to ``digest``, not to its id, and
        dead-letter its transfers, all with the reason; then raise :class:`CorruptPackage`."""
        reason = (
            f"the stored package is corrupted: its bytes hash to {digest}, not to its id"
            f" {package_id}; it is never sent or served again (ask its sender for it anew)"
        )

        def op(tx: Tx) -> None:
            row = tx.one("SELECT state FROM packages WHERE package_id = ?", (package_id,))
            if row is None or row[0] == PackageState.QUARANTINED:
                return
            now = time.time()
            tx.move(
                "package", package_id, PackageState.QUARANTINED, now, reason, {"reason": reason}
            )
            for (tid,) in tx.all(
                "SELECT transfer_id FROM transfers WHERE package_id = ?"
                " AND state IN ('queued', 'in_flight')",
                (package_id,),
            ):
                dead: dict[str, str | None] = {"last_error": reason, "lease_token": None}
                tx.move("transfer", tid, TransferState.DEAD, now, reason, dead)

        await self._write(op)
        raise CorruptPackage(reason)

    async def get_package(self, package_id: str) -> PackageRecord:
        """The package's record, or :class:`UnknownId`."""
        row = await self._row(
            f"SELECT {_PACKAGE_COLUMNS} FROM packages WHERE package_id = ?",  # noqa: S608
            (package_id,),
        )
        if row is None:
            raise UnknownId(f"no package {package_id}")
        return _package_record(row)

    async def packages(self, state: PackageState) -> list[PackageRecord]:
        """Packages in ``state``, oldest first."""
        rows = await self._rows(
            f"SELECT {_PACKAGE_COLUMNS} FROM packages WHERE state = ?"  # noqa: S608
            " ORDER BY created_at",
            (state.value,),
        )
        return [_package_record(r) for r in rows]

    async def set_package_state(
        self, package_id: str, to_state: PackageState, now: float, reason: str | None = None
    ) -> None:
        """Move a package along its life cycle."""

        def op(tx: Tx) -> None:
            sets = {"reason": reason} if reason is not None else None
            tx.move("package", package_id, to_state, now, reason or "", sets)

        await self._write(op)

    # -- transfers ---------------------------------------------------------------------------

    async def enqueue(
        self, package_id: str, hops: Mapping[str, Sequence[str]], now: float
    ) -> list[str]:
        """One queued transfer per next hop; the package becomes routed."""
        if not hops:
            raise ValueError("enqueue needs at least one next hop")

        def op(tx: Tx) -> list[str]:
            return _route(tx, package_id, hops, now)

        return await self._write(op, keeps_queue=True)

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

        def op(tx: Tx) -> Rerouted | None:
            row = tx.one(
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
            tx.move(
                "transfer",
                transfer_id,
                TransferState.REROUTED,
                now,
                f"re-routed from {old}: {what}{f' ({detail})' if detail else ''}",
                {"lease_token": None},
            )
            since = row["since"] if row["state"] == TransferState.QUEUED else now
            created = {
                hop: _queue_transfer(
                    tx,
                    pid,
                    hop,
                    recipients,
                    now,
                    f"to {hop}, re-routed {old}",
                    created_at=row["created_at"],
                    since=since,
                )
                for hop, recipients in hops.items()
            }
            delivered = []
            for recipient in local:
                added = tx.run(
                    "INSERT INTO inbox (package_id, recipient, state, added_at)"
                    " VALUES (?,?,?,?) ON CONFLICT DO NOTHING",
                    (pid, recipient, InboxState.NEW.value, now),
                )
                if added:
                    tx.log(now, "inbox", f"{pid}:{recipient}", None, InboxState.NEW)
                    delivered.append(recipient)
            _revive_package(tx, pid, now)
            _maybe_done(tx, pid, now)
            return Rerouted(created, tuple(delivered))

        return await self._write(op)

    async def lease_transfer(self, next_hop: str | None, now: float) -> Lease | None:
        """Take the next due transfer and count the attempt.

        Taking a queued transfer costs no wait for a commit, and one read for up to
        :data:`~lienthong.store.takes.AHEAD` takes (rows read ahead, see :mod:`.takes`): the
        transfer is reserved here at once, and its move to in_flight (attempt counted) joins
        the next grouped commit. Writes run in the order they are handed over, so a hop receipt or a
        failure of the attempt, recorded later, always finds it in flight. A transfer whose
        lease ran out is taken in a write transaction of its own (the retry schedule decides).
        """
        takes = self._takes
        row = takes.next_ahead(next_hop, now)
        if row is None:
            reserved = dict(takes.reserved)
            hop = "" if next_hop is None else " AND t.next_hop = ?"
            extra = () if next_hop is None else (next_hop,)
            reading = takes.begin_read()
            found: list[Row] = []
            try:
                expired, found = await self._read_few(
                    [
                        (
                            "SELECT 1 FROM transfers t WHERE state = 'in_flight'"  # noqa: S608
                            f" AND lease_expires_at <= ?{hop} LIMIT 1",
                            (now, *extra),
                        ),
                        (
                            "SELECT t.transfer_id, t.package_id, t.next_hop, t.recipients,"  # noqa: S608
                            " t.attempts, p.kind, p.document_id, p.sender FROM transfers t"
                            " JOIN packages p USING (package_id)"
                            f" WHERE t.state = 'queued' AND t.next_attempt_at <= ?{hop}"
                            " ORDER BY t.next_attempt_at LIMIT ?",
                            (now, *extra, takes.skip + AHEAD),
                        ),
                    ]
                )
            finally:
                rows, seen, keep = takes.end_read(reading, found)
            # A reservation whose lease ran out before its write landed counts as run out too.
            if expired or any(reserved.get(r["transfer_id"], now + 1) <= now for r in found):
                return await self._lease_in_transaction(next_hop, now)
            if not rows:
                return None
            row = rows[0]
            if keep:
                takes.keep_ahead(next_hop, seen, now, rows[1:])
        tid, attempt = str(row["transfer_id"]), int(row["attempts"]) + 1
        token = uuid.uuid4().hex
        expires = now + self.settings.lease_s
        takes.reserve(tid, expires)

        def op(tx: Tx) -> None:
            tx.move(
                "transfer",
                tid,
                TransferState.IN_FLIGHT,
                now,
                f"attempt {attempt}",
                {"attempts": attempt, "lease_token": token, "lease_expires_at": expires},
                expect=TransferState.QUEUED,  # read ahead, or reserved since: taken from queued
            )

        def settled(done: asyncio.Future[None]) -> None:
            takes.committed(tid)
            if not done.cancelled() and done.exception() is not None:
                # Another writer moved it first: the attempt's receipt or failure finds it
                # in another state and changes nothing; the transfer is taken again later.
                _log.warning("lease_not_recorded", transfer_id=tid, reason=repr(done.exception()))

        # Handed over before returning, so whatever the sender records next comes after it.
        # Taking a transfer need not survive power loss: it would only be sent again.
        self._submit(op, (), durable=False, keeps_queue=True).add_done_callback(settled)
        return Lease(
            tid,
            row["package_id"],
            row["next_hop"],
            tuple(json.loads(row["recipients"])),
            row["kind"],
            row["document_id"],
            row["package_id"],
            attempt,
            token,
            expires,
            row["sender"],
        )

    async def _lease_in_transaction(self, next_hop: str | None, now: float) -> Lease | None:
        """Take the next due transfer in one write transaction, a lease that ran out first."""
        policy = self.settings.retry

        def op(tx: Tx) -> Lease | None:
            while True:
                row = _due_transfer(tx, next_hop, now)
                if row is None:
                    return None
                tid, attempts = str(row["transfer_id"]), int(row["attempts"])
                if row["state"] == TransferState.IN_FLIGHT:
                    error = f"lease ran out during attempt {attempts} (sender lost)"
                    decision = retry.decide(policy, attempts, row["since"], now, error, self._rng)
                    if decision.dead:
                        tx.move(
                            "transfer",
                            tid,
                            TransferState.DEAD,
                            now,
                            decision.reason,
                            {"last_error": decision.reason, "lease_token": None},
                        )
                        continue
                    tx.move(
                        "transfer",
                        tid,
                        TransferState.QUEUED,
                        now,
                        error,
                        {"last_error": error, "lease_token": None},
                    )
                token = uuid.uuid4().hex
                expires = now + self.settings.lease_s
                tx.move(
                    "transfer",
                    tid,
                    TransferState.IN_FLIGHT,
                    now,
                    f"attempt {attempts + 1}",
                    {"attempts": attempts + 1, "lease_token": token, "lease_expires_at": expires},
                )
                full = tx.one(
                    "SELECT t.*, p.kind, p.document_id, p.sender FROM transfers t"
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
                    full["sender"],
                )

        # Taking a transfer need not survive power loss: it would only be sent again.
        return await self._write(op, durable=False)

    async def release_leases(self, now: float, reason: str) -> list[str]:
        """Put every transfer in flight back in the queue, due at once, with ``reason``; their
        ids. For a daemon that has just taken the store over: the daemon that took those
        transfers is gone, so their leases would only make them wait. The attempts stay
        counted; a hop receipt that still comes acknowledges the transfer (queued -> acked)."""

        def op(tx: Tx) -> list[str]:
            ids = [
                str(r[0])
                for r in tx.all("SELECT transfer_id FROM transfers WHERE state = 'in_flight'")
            ]
            for tid in ids:
                tx.move(
                    "transfer",
                    tid,
                    TransferState.QUEUED,
                    now,
                    reason,
                    {"last_error": reason, "lease_token": None, "next_attempt_at": now},
                )
            return ids

        return await self._write(op)

    async def extend_lease(self, lease: Lease, now: float) -> float | None:
        """Keep ``lease`` for another ``lease_s`` from ``now``: its new end, or None when the
        transfer is no longer in flight under this lease (taken again, settled, re-routed)."""
        expires = now + self.settings.lease_s
        tid = lease.transfer_id
        self._takes.extend(tid, expires)

        def op(tx: Tx) -> bool:
            return bool(
                tx.run(
                    "UPDATE transfers SET lease_expires_at = ? WHERE transfer_id = ?"
                    " AND state = 'in_flight' AND lease_token = ? AND lease_expires_at < ?",
                    (expires, tid, lease.token, expires),
                )
                or tx.one(
                    "SELECT 1 FROM transfers WHERE transfer_id = ? AND state = 'in_flight'"
                    " AND lease_token = ?",
                    (tid, lease.token),
                )
            )

        # Like taking it: losing the extension on power loss only makes it go again.
        return expires if await self._write(op, durable=False, keeps_queue=True) else None

    async def ack(self, transfer_id: str, sha256: str, now: float, by: str | None = None) -> bool:
        """Record the hop receipt; False if it was acknowledged already."""
        (outcome,) = await self.ack_many([(transfer_id, sha256)], now, by)
        if isinstance(outcome, LienthongError):
            raise outcome
        return outcome

    async def ack_many(
        self, receipts: Sequence[tuple[str, str]], now: float, by: str | None = None
    ) -> list[bool | LienthongError]:
        """Record hop receipts ``(transfer_id, sha256)`` in one operation; for each, True, False
        (acknowledged already) or the error that refused it."""

        def op(tx: Tx) -> list[bool | LienthongError]:
            outcomes: list[bool | LienthongError] = []
            for transfer_id, sha256 in receipts:
                try:
                    outcomes.append(_ack(tx, transfer_id, sha256, now, by))
                except LienthongError as exc:
                    outcomes.append(exc)
            return outcomes

        # Lost on power loss, the transfer is sent again and the next hop answers it again.
        return await self._write(op, durable=False, keeps_queue=True)

    async def fail(self, lease: Lease, error: str, now: float) -> FailResult:
        """Schedule a retry of the leased transfer, or dead-letter it."""
        policy = self.settings.retry

        def op(tx: Tx) -> FailResult:
            row = tx.one(
                "SELECT state, lease_token, attempts, since FROM transfers WHERE transfer_id = ?",
                (lease.transfer_id,),
            )
            if row is None:
                raise UnknownId(f"no transfer {lease.transfer_id}")
            if row["state"] != TransferState.IN_FLIGHT or row["lease_token"] != lease.token:
                return FailResult(FailOutcome.STALE)
            decision = retry.decide(policy, row["attempts"], row["since"], now, error, self._rng)
            if decision.dead:
                tx.move(
                    "transfer",
                    lease.transfer_id,
                    TransferState.DEAD,
                    now,
                    decision.reason,
                    {"last_error": decision.reason, "lease_token": None},
                )
                return FailResult(FailOutcome.DEAD)
            tx.move(
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

        # Lost on power loss, the lease runs out and the transfer is taken again.
        return await self._write(op, durable=False, keeps_queue=True)

    async def dead_letters(self) -> list[DeadLetter]:
        """Dead transfers and expired packages with their reasons, oldest first."""
        transfers = await self._rows(
            "SELECT t.*, p.document_id FROM transfers t JOIN packages p USING (package_id)"
            " WHERE t.state = 'dead' ORDER BY t.updated_at"
        )
        packages = await self._rows(
            f"SELECT {_PACKAGE_COLUMNS} FROM packages WHERE state = 'expired'"  # noqa: S608
            " ORDER BY updated_at"
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

        def op(tx: Tx) -> int:
            if item_id is None:
                tids = [
                    r[0] for r in tx.all("SELECT transfer_id FROM transfers WHERE state = 'dead'")
                ]
                pids = [
                    r[0] for r in tx.all("SELECT package_id FROM packages WHERE state = 'expired'")
                ]
            else:
                tids, pids = _dead_item(tx, item_id)
            count = 0
            for tid in tids:
                _requeue_transfer(tx, tid, now)
                count += 1
            for pid in pids:
                row = tx.one("SELECT state FROM packages WHERE package_id = ?", (pid,))
                if row is not None and row[0] == PackageState.EXPIRED:
                    dead = [
                        r[0]
                        for r in tx.all(
                            "SELECT transfer_id FROM transfers"
                            " WHERE package_id = ? AND state = 'dead'",
                            (pid,),
                        )
                    ]
                    for tid in dead:
                        _requeue_transfer(tx, tid, now)
                    _revive_package(tx, pid, now)
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

        def op(tx: Tx) -> Expired:
            old = [
                r[0]
                for r in tx.all(
                    f"SELECT package_id FROM packages WHERE state IN ({in_states})"  # noqa: S608
                    " AND since <= ?",
                    (*states, package_cutoff),
                )
            ]
            dead: list[str] = []
            for pid in old:
                reason = f"package expired: older than {self.settings.package_max_age_s:g} s"
                for (tid,) in tx.all(
                    "SELECT transfer_id FROM transfers WHERE package_id = ?"
                    " AND state IN ('queued', 'in_flight')",
                    (pid,),
                ):
                    tx.move(
                        "transfer",
                        tid,
                        TransferState.DEAD,
                        now,
                        reason,
                        {"last_error": reason, "lease_token": None},
                    )
                    dead.append(tid)
                tx.move("package", pid, PackageState.EXPIRED, now, reason, {"reason": reason})
            for (tid,) in tx.all(
                "SELECT transfer_id FROM transfers WHERE state = 'queued' AND since <= ?",
                (transfer_cutoff,),
            ):
                reason = f"transfer expired: queued longer than {self.settings.retry.max_age_s:g} s"
                tx.move("transfer", tid, TransferState.DEAD, now, reason, {"last_error": reason})
                dead.append(tid)
            return Expired(tuple(old), tuple(dead))

        return await self._write(op)

    # -- inbox and receipts ---------------------------------------------------------------

    async def inbox_add(self, package_id: str, recipients: Sequence[str], now: float) -> None:
        """Deliver a verified package to local recipients."""

        def op(tx: Tx) -> None:
            _inbox_add(tx, package_id, recipients, now)

        await self._write(op)

    async def deliver(
        self,
        package_id: str,
        recipients: Sequence[str],
        now: float,
        replies: Sequence[Reply] = (),
        receipt: Receipt | None = None,
    ) -> None:
        """Deliver a checked package to local ``recipients`` (-> verified -> delivered), record
        ``receipt`` and store the ``replies`` made here (status 01 ...), each routed or
        delivered here, all in one commit: no stop in between can lose a reply."""

        def op(tx: Tx) -> None:
            row = tx.one("SELECT state FROM packages WHERE package_id = ?", (package_id,))
            if row is not None and row[0] == PackageState.STORED:
                tx.move("package", package_id, PackageState.VERIFIED, now)
            _inbox_add(tx, package_id, recipients, now)
            if receipt is not None:
                _add_receipt(tx, receipt)
            for reply in replies:
                pid = reply.meta.sha256
                if tx.one("SELECT 1 FROM packages WHERE package_id = ?", (pid,)):
                    continue  # made before, with the same bytes: stored and routed then
                inline = self._inline(reply.data)
                _insert_package(tx, reply.meta, inline, None, PackageState.SIGNED, now)
                if reply.local:
                    tx.move("package", pid, PackageState.VERIFIED, now)
                    _inbox_add(tx, pid, reply.local, now)
                    if reply.receipt is not None:
                        _add_receipt(tx, reply.receipt)
                if reply.hops:
                    _route(tx, pid, reply.hops, now)

        for reply in replies:
            reply.meta.check(reply.data)
            self._remember(reply.meta.sha256, reply.data)
        await self._write(op, [(r.meta.sha256, r.data) for r in replies])

    async def inbox_list(
        self, recipient: str | None = None, pending: bool = True
    ) -> list[InboxEntry]:
        """Inbox entries, oldest first."""
        rows = await self._rows(
            _INBOX_SELECT + " WHERE (CAST(? AS TEXT) IS NULL OR recipient = ?)"
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

        def op(tx: Tx) -> None:
            row = tx.one(
                "SELECT i.package_id, i.recipient, i.state, p.document_id FROM inbox i"
                " JOIN packages p USING (package_id) WHERE entry_id = ?",
                (entry_id,),
            )
            if row is None:
                raise UnknownId(f"no inbox entry {entry_id}")
            if row["state"] in (InboxState.DONE, InboxState.REVOKED):
                return  # retrieved or revoked already: a repeated acknowledgement changes nothing
            to_state = InboxState.DONE if ok else InboxState.FAILED
            tx.move("inbox entry", entry_id, to_state, now, detail)
            _add_receipt(
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
            _maybe_done(tx, row["package_id"], now)

        await self._write(op)

    async def inbox_revoke(
        self, document_id: str, recipient: str, now: float, reason: str = ""
    ) -> int:
        """Mark the document's entries for ``recipient`` revoked; how many changed."""

        def op(tx: Tx) -> int:
            rows = tx.all(
                "SELECT i.entry_id, i.package_id FROM inbox i JOIN packages p USING (package_id)"
                " WHERE p.document_id = ? AND i.recipient = ? AND p.kind = 'edoc'"
                " AND i.state != 'revoked'",
                (document_id, recipient),
            )
            for row in rows:
                tx.move("inbox entry", row["entry_id"], InboxState.REVOKED, now, reason)
                _maybe_done(tx, row["package_id"], now)
            return len(list(rows))

        return await self._write(op)

    async def record_receipt(self, receipt: Receipt) -> None:
        """Record a receipt for its document."""

        def op(tx: Tx) -> None:
            _add_receipt(tx, receipt)

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


def _insert_package(
    tx: Tx,
    meta: PackageMeta,
    inline: bytes | None,
    from_peer: str | None,
    before: PackageState,
    now: float,
) -> None:
    """Insert a package (``before -> stored``); ``inline`` its bytes when they live in the row."""
    pid = meta.sha256
    check("package", pid, before, PackageState.STORED)
    tx.run(
        f"INSERT INTO packages ({_PACKAGE_COLUMNS}, data)"  # noqa: S608
        " VALUES (?,?,?,?,?,?,?,?,NULL,?,?,?,?)",
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
            inline,
        ),
    )
    origin = f"from {from_peer}" if from_peer else "submitted here"
    tx.log(
        now, "package", pid, before, PackageState.STORED, f"{meta.kind} {meta.document_id} {origin}"
    )


def _route(
    tx: Tx,
    package_id: str,
    hops: Mapping[str, Sequence[str]],
    now: float,
    *,
    expect: PackageState | None = None,
) -> list[str]:
    """Move the package to routed and queue one transfer per next hop; their ids.
    ``expect``: the package's state when this operation has just set it (:meth:`Tx.move`)."""
    tx.move("package", package_id, PackageState.ROUTED, now, ", ".join(hops), expect=expect)
    return [
        _queue_transfer(tx, package_id, hop, recipients, now, f"to {hop}")
        for hop, recipients in hops.items()
    ]


def new_transfer_id() -> str:
    """A new transfer id: 32 hex digits, the time in nanoseconds then 64 random bits.

    Ids made later sort later, so the rows keyed by them (transfers here, ``received`` at the
    next hop) are appended to the end of their index instead of landing on a random page of
    it: a commit of many transfers rewrites a few pages, not one per transfer."""
    return f"{time.time_ns():016x}{secrets.token_hex(8)}"


def _queue_transfer(
    tx: Tx,
    package_id: str,
    hop: str,
    recipients: Sequence[str],
    now: float,
    detail: str,
    *,
    created_at: float | None = None,
    since: float | None = None,
) -> str:
    """Insert one queued transfer of ``package_id`` to ``hop`` (due now), journaled; its id.
    ``created_at`` and ``since`` default to ``now`` (a re-routed transfer keeps its age)."""
    tid = new_transfer_id()
    tx.run(
        "INSERT INTO transfers (transfer_id, package_id, next_hop, recipients, state,"
        " created_at, since, next_attempt_at, updated_at) VALUES (?,?,?,?,?,?,?,?,?)",
        (
            tid,
            package_id,
            hop,
            json.dumps(list(recipients)),
            TransferState.QUEUED.value,
            now if created_at is None else created_at,
            now if since is None else since,
            now,
            now,
        ),
    )
    tx.log(now, "transfer", tid, None, TransferState.QUEUED, detail)
    return tid


def _due_transfer(tx: Tx, next_hop: str | None, now: float) -> Row | None:
    """The transfer to take next (for ``next_hop``, or any): one whose lease ran out first,
    else the queued one due longest. Each query walks an index, never the whole history."""
    hop = "" if next_hop is None else " AND next_hop = ?"
    extra = () if next_hop is None else (next_hop,)
    columns = "SELECT transfer_id, state, attempts, since FROM transfers"
    return tx.one(
        f"{columns} WHERE state = 'in_flight' AND lease_expires_at <= ?{hop}"
        " ORDER BY lease_expires_at LIMIT 1",
        (now, *extra),
    ) or tx.one(
        f"{columns} WHERE state = 'queued' AND next_attempt_at <= ?{hop}"
        " ORDER BY next_attempt_at LIMIT 1",
        (now, *extra),
    )


def _inbox_add(tx: Tx, package_id: str, recipients: Sequence[str], now: float) -> None:
    """Deliver the package to ``recipients`` here: delivered, one new inbox entry each."""
    tx.move("package", package_id, PackageState.DELIVERED, now, ", ".join(recipients))
    for recipient in recipients:
        tx.run(
            "INSERT INTO inbox (package_id, recipient, state, added_at) VALUES (?,?,?,?)",
            (package_id, recipient, InboxState.NEW.value, now),
        )
        tx.log(now, "inbox", f"{package_id}:{recipient}", None, InboxState.NEW)


def _ack(tx: Tx, transfer_id: str, sha256: str, now: float, by: str | None) -> bool:
    """Record one hop receipt: True, or False when it was acknowledged already.

    Every refusal (unknown transfer, wrong neighbour, other digest, a transfer that can no
    longer be acknowledged) is raised before anything is written, so :meth:`SqlStore.ack_many`
    can go on with the next receipt of the same operation."""
    row = tx.one(
        "SELECT t.state, t.next_hop, t.package_id, p.document_id FROM transfers t"
        " JOIN packages p USING (package_id) WHERE transfer_id = ?",
        (transfer_id,),
    )
    if row is None:
        raise UnknownId(f"hop receipt for unknown transfer {transfer_id}")
    if by is not None and by != row["next_hop"]:
        raise WrongPeer(
            f"hop receipt for transfer {transfer_id} from {by}; it was sent to {row['next_hop']}"
        )
    if row["package_id"] != sha256:
        raise DigestMismatch(
            f"hop receipt for transfer {transfer_id} names sha256 {sha256}, "
            f"the package is {row['package_id']}"
        )
    if row["state"] == TransferState.ACKED:
        return False
    tx.move(
        "transfer",
        transfer_id,
        TransferState.ACKED,
        now,
        f"hop receipt from {row['next_hop']}",
        {"lease_token": None},
        expect=row["state"],
    )
    _add_receipt(
        tx, Receipt(row["document_id"], "hop", "stored", row["next_hop"], now, transfer_id)
    )
    _maybe_done(tx, row["package_id"], now)
    return True


def _add_receipt(tx: Tx, r: Receipt) -> None:
    tx.run(
        'INSERT INTO receipts (document_id, level, code, "by", at, detail) VALUES (?,?,?,?,?,?)',
        (r.document_id, r.level, r.code, r.by, r.at, r.detail),
    )
    tx.log(r.at, "receipt", r.document_id, None, f"{r.level} {r.code}", f"by {r.by}")


_INBOX_SELECT = (
    "SELECT i.*, p.document_id, p.kind, p.sender FROM inbox i JOIN packages p USING (package_id)"
)


def _inbox_entry(r: Row) -> InboxEntry:
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


def _maybe_done(tx: Tx, package_id: str, now: float) -> None:
    """Mark the package done once every transfer is acknowledged and every entry retrieved."""
    row = tx.one(
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
        tx.move("package", package_id, PackageState.DONE, now, expect=row[0])


def _dead_item(tx: Tx, item_id: str) -> tuple[list[str], list[str]]:
    """The dead transfer or expired package named ``item_id``, or :class:`UnknownId`."""
    row = tx.one("SELECT state FROM transfers WHERE transfer_id = ?", (item_id,))
    if row is not None:
        if row[0] != TransferState.DEAD:
            raise UnknownId(f"transfer {item_id} is {row[0]}, not dead: nothing to requeue")
        return [item_id], []
    row = tx.one("SELECT state FROM packages WHERE package_id = ?", (item_id,))
    if row is not None:
        if row[0] != PackageState.EXPIRED:
            raise UnknownId(f"package {item_id} is {row[0]}, not expired: nothing to requeue")
        return [], [item_id]
    raise UnknownId(f"no dead transfer or expired package with id {item_id}")


def _requeue_transfer(tx: Tx, tid: str, now: float) -> None:
    tx.move(
        "transfer",
        tid,
        TransferState.QUEUED,
        now,
        "requeued",
        {"attempts": 0, "since": now, "next_attempt_at": now},
    )
    row = tx.one(
        "SELECT p.package_id, p.state FROM transfers t JOIN packages p USING (package_id)"
        " WHERE transfer_id = ?",
        (tid,),
    )
    if row is not None and row[1] == PackageState.EXPIRED:
        _revive_package(tx, row[0], now)


def _revive_package(tx: Tx, pid: str, now: float) -> None:
    row = tx.one("SELECT state FROM packages WHERE package_id = ?", (pid,))
    if row is None or row[0] != PackageState.EXPIRED:
        return
    has_transfers = tx.one("SELECT 1 FROM transfers WHERE package_id = ?", (pid,))
    to_state = PackageState.ROUTED if has_transfers else PackageState.STORED
    tx.move("package", pid, to_state, now, "requeued", {"since": now})


def _package_record(r: Row) -> PackageRecord:
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
