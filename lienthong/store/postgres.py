"""The store on PostgreSQL (asyncpg), for a node that runs on two machines: every operation is
:mod:`lienthong.store.sqlstore`'s; this module is the engine.

Package bytes. Every package lives in its row (``bytea``, stored out of line and uncompressed),
whatever its size: the database is then the one thing the two machines share, replicate and
back up, and a package is committed in the same transaction as the row that announces it. A
shared folder for large packages would be a second system to make highly available (and
to fsync across a network); large objects would only pay off for streaming reads, which the
store's interface does not offer (it hands packages over as bytes).

Writer. asyncpg is asynchronous and the operations are synchronous functions of a :class:`Tx`,
so the writer connection lives in the writer thread with an event loop of its own: each
statement of an operation runs to completion on that loop (``run_until_complete``), and the
main loop is free meanwhile, as with SQLite. A batch is one transaction: the journal head is read
``FOR UPDATE`` first (which serialises every writer of the database: a second daemon, the
``lienthong requeue`` command), the operations run as :func:`~lienthong.store.sqlstore.run_ops`
says (one savepoint, the journal in one ``executemany``), one COMMIT. Commits are
durable (``synchronous_commit`` as the server has it), except a batch of bookkeeping only
(taking a transfer, a failed attempt, a hop receipt), which commits with
``synchronous_commit = off``: a crash of the server loses at most its last fraction of a second
of such commits, and a transfer is sent again. A lost connection is opened again at the next
batch; meanwhile intake is stopped with the reason (:attr:`intake_blocked`).

Reads use a small pool of connections on the main loop and see committed data.

Fencing. A daemon opened with ``exclusive=True`` (the active one of a pair: see
:mod:`lienthong.standby`) increments ``journal_head.epoch`` when it opens and every batch checks
that the epoch is still its own: once a standby has taken over, the old daemon, if it still runs
without knowing it lost its lock, can commit nothing more (:class:`NotActive`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import re
from collections.abc import Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import asyncpg

from lienthong.config import StoreSettings
from lienthong.logs import get_logger
from lienthong.store.errors import DiskFull, StoreTransientError, UnknownId
from lienthong.store.model import PackageSource
from lienthong.store.pgschema import MIGRATIONS
from lienthong.store.sqlstore import Outcome, Pending, Query, Row, SqlStore, Tx, run_ops

T = TypeVar("T")
_log = get_logger("lienthong.store")

COMMAND_TIMEOUT_S = 60.0
"""A statement that takes longer (a server gone silent) fails instead of hanging the writer."""

_ENGINE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)
_SCHEMA_LOCK = 0x6C69656E7468
"""The advisory lock key held while migrating, so two daemons starting at once migrate once."""


class NotActive(StoreTransientError):
    """Another daemon has taken the store over: this one may write nothing more."""


@functools.lru_cache(maxsize=512)
def numbered(sql: str) -> str:
    """``sql`` with its ``?`` placeholders numbered ``$1, $2, ...`` (the shared SQL has no
    question mark anywhere else)."""
    count = iter(range(1, sql.count("?") + 1))
    return re.sub(r"\?", lambda _: f"${next(count)}", sql)


def _changed(status: str) -> int:
    """Rows changed, from a command status (``UPDATE 1``, ``INSERT 0 1``)."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def connect_args(settings: StoreSettings, password: str | None) -> dict[str, Any]:
    """The arguments of ``asyncpg.connect`` for ``settings``."""
    return {
        "dsn": settings.dsn,
        "password": password,
        "command_timeout": COMMAND_TIMEOUT_S,
        "server_settings": {"application_name": "lienthong"},
    }


class _PgTx(Tx):
    """The open PostgreSQL write transaction (in the writer thread, on its loop)."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        run: Any,
        head: tuple[int, str],
    ) -> None:
        super().__init__(head)
        self.conn = conn
        self._run = run

    def one(self, sql: str, params: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._run(self.conn.fetchrow(numbered(sql), *params))
        return row

    def all(self, sql: str, params: Sequence[Any] = ()) -> list[Row]:
        rows: list[Row] = self._run(self.conn.fetch(numbered(sql), *params))
        return rows

    def run(self, sql: str, params: Sequence[Any] = ()) -> int:
        return _changed(self._run(self.conn.execute(numbered(sql), *params)))


class PostgresStore(SqlStore):
    """The :class:`~lienthong.store.base.Store` in the PostgreSQL database ``settings.dsn``.

    ``state_dir`` still holds what stays on the machine: conflicting transfers kept for
    inspection (``quarantine/``). ``exclusive``: this daemon is the active one (see the module
    docstring on fencing)."""

    def __init__(
        self,
        state_dir: Path,
        settings: StoreSettings,
        rng: random.Random | None = None,
        *,
        password: str | None = None,
        exclusive: bool = False,
    ) -> None:
        super().__init__(state_dir, settings, rng)
        self._connect_args = connect_args(settings, password)
        self.exclusive = exclusive
        self.epoch: int | None = None
        """This daemon's epoch once it took the store over (``exclusive``)."""
        self._pool: asyncpg.Pool | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        """The writer thread's event loop."""
        self._conn: asyncpg.Connection | None = None
        """The writer connection (used only in the writer thread)."""

    @property
    def where(self) -> str:
        """The database, for messages (the DSN without its password)."""
        return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1@", self.settings.dsn)

    @property
    def superseded(self) -> bool:
        """True once a batch found that another daemon has taken the store over."""
        return self._blocked is not None and self._blocked.startswith("another daemon")

    # -- opening and closing ---------------------------------------------------------------

    async def open(self) -> None:
        """Connect, create or migrate the schema, take the store over when ``exclusive``, and
        start the writer task."""
        if self._task is not None:
            raise RuntimeError("store is already open")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="store-writer")
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._write_thread, self._open_writer)
            self._pool = await asyncpg.create_pool(min_size=1, max_size=4, **self._connect_args)
        except BaseException as exc:
            await self._close_connections()
            if isinstance(exc, _ENGINE_ERRORS):
                raise self._db_error(exc, "opening the database") from exc
            raise
        self._start()

    def _in_writer(self, work: Coroutine[Any, Any, T]) -> T:
        """Run ``work`` on the writer thread's loop (called in the writer thread)."""
        assert self._loop is not None
        return self._loop.run_until_complete(work)

    def _open_writer(self) -> None:
        """The writer's loop and connection; the schema made current (in the writer thread)."""
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
        conn = self._in_writer(asyncpg.connect(**self._connect_args))
        try:
            self._in_writer(self._migrate(conn))
            if self.exclusive and self.epoch is None:
                self.epoch = self._in_writer(
                    conn.fetchval(
                        "UPDATE journal_head SET epoch = epoch + 1 WHERE id = 1 RETURNING epoch"
                    )
                )
                _log.info("store_taken_over", database=self.where, epoch=self.epoch)
        except BaseException:
            self._in_writer(conn.close())
            raise
        self._conn = conn

    async def _migrate(self, conn: asyncpg.Connection) -> None:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
            await conn.execute("CREATE TABLE IF NOT EXISTS lienthong_schema (version integer)")
            version = await conn.fetchval("SELECT max(version) FROM lienthong_schema") or 0
            if version > len(MIGRATIONS):
                raise StoreTransientError(
                    f"database schema version {version} is newer than this lienthong knows "
                    f"({len(MIGRATIONS)}): upgrade lienthong"
                )
            for number in range(version, len(MIGRATIONS)):
                await conn.execute(MIGRATIONS[number])
                await conn.execute("INSERT INTO lienthong_schema VALUES ($1)", number + 1)

    async def close(self) -> None:
        """Finish the writes already handed over, then close."""
        await self._stop()
        await self._close_connections()

    async def _close_connections(self) -> None:
        if self._pool is not None:
            with contextlib.suppress(*_ENGINE_ERRORS):
                await self._pool.close()
            self._pool = None
        if self._write_thread is not None:
            await asyncio.get_running_loop().run_in_executor(self._write_thread, self._close_writer)
            self._write_thread.shutdown(wait=False)
            self._write_thread = None

    def _close_writer(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(*_ENGINE_ERRORS):
                self._in_writer(self._conn.close(timeout=5))
            self._conn = None
        if self._loop is not None:
            self._loop.close()
            self._loop = None

    # -- the writer --------------------------------------------------------------------------

    def _run_batch(self, batch: list[Pending]) -> list[Outcome]:
        """Run the batch in one transaction (in the writer thread); each op's outcome."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._conn = None
                self._open_writer()
            conn = self._conn
            assert conn is not None
            transaction = conn.transaction()
            self._in_writer(transaction.start())
            try:
                outcomes = self._run_in(conn, batch)
                self._in_writer(transaction.commit())
            except BaseException:
                if not conn.is_closed():
                    with contextlib.suppress(*_ENGINE_ERRORS):
                        self._in_writer(transaction.rollback())
                raise
        except NotActive as exc:
            self._blocked = str(exc)
            return [(False, exc)] * len(batch)
        except Exception as exc:
            error: Exception = exc
            if isinstance(exc, _ENGINE_ERRORS):
                error = self._db_error(exc, f"committing {len(batch)} write(s)")
                if isinstance(error, StoreTransientError):
                    self._blocked = str(error)
            return [(False, error)] * len(batch)
        return outcomes

    def _run_in(self, conn: asyncpg.Connection, batch: list[Pending]) -> list[Outcome]:
        """The batch's statements inside its open transaction."""
        run = self._in_writer
        if not any(item.durable for item in batch):
            run(conn.execute("SET LOCAL synchronous_commit = off"))
        row = run(conn.fetchrow("SELECT seq, hash, epoch FROM journal_head FOR UPDATE"))
        assert row is not None
        if self.epoch is not None and row["epoch"] != self.epoch:
            raise NotActive(
                f"another daemon has taken the store over (epoch {row['epoch']}, this daemon's"
                f" {self.epoch}): this one may write nothing more"
            )
        head = start = (int(row["seq"]), str(row["hash"]))
        outcomes, head = run_ops(
            batch,
            head,
            lambda at: _PgTx(conn, run, at),
            lambda sql: run(conn.execute(sql)),
            _ENGINE_ERRORS,
            lambda sql, rows: run(conn.executemany(numbered(sql), rows)),
        )
        if head != start:
            run(conn.execute("UPDATE journal_head SET seq = $1, hash = $2 WHERE id = 1", *head))
        return outcomes

    def _db_error(self, exc: BaseException, what: str) -> Exception:
        """The PostgreSQL or connection error as the project's error naming the cause."""
        if isinstance(exc, asyncpg.DiskFullError):
            return DiskFull(f"disk full on the database server while {what} ({self.where})")
        if isinstance(exc, asyncpg.PostgresError) and not isinstance(
            exc,
            asyncpg.PostgresConnectionError
            | asyncpg.InsufficientResourcesError
            | asyncpg.OperatorInterventionError
            | asyncpg.TransactionRollbackError
            | asyncpg.InvalidAuthorizationSpecificationError
            | asyncpg.InvalidCatalogNameError
            | asyncpg.LockNotAvailableError,
        ):
            return exc  # a statement the database refused: a bug, not the world
        reason = str(exc) or type(exc).__name__
        return StoreTransientError(f"database error while {what} ({self.where}): {reason}")

    # -- reads -------------------------------------------------------------------------------

    async def _read_many(self, queries: Sequence[Query]) -> list[list[Row]]:
        pool = self._pool
        if pool is None:
            raise RuntimeError("store is not open")
        try:
            async with pool.acquire() as conn:
                return [list(await conn.fetch(numbered(sql), *params)) for sql, params in queries]
        except _ENGINE_ERRORS as exc:
            raise self._db_error(exc, "reading") from exc

    async def _read_bytes(self, package_id: str) -> bytes:
        (rows,) = await self._read_many(
            [("SELECT data FROM packages WHERE package_id = ?", (package_id,))]
        )
        if not rows:
            raise UnknownId(f"no package {package_id}")
        return bytes(rows[0][0])

    # -- where package bytes live ------------------------------------------------------------

    def _inline(self, data: PackageSource) -> bytes | None:
        # Every package lives in its row (see the module docstring); a file given was read
        # into memory by _small_in_memory first, as keeps_files is False.
        assert not isinstance(data, Path)
        return data

    def _file_blobs(
        self, blobs: Sequence[tuple[str, PackageSource]]
    ) -> tuple[tuple[str, PackageSource], ...]:
        return ()

    async def _probe(self) -> None:
        """Nothing besides the database: the write transaction that follows probes it."""
