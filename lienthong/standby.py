"""Which daemon of a pair is the active one: a PostgreSQL advisory lock on a connection of its own.

Two daemons of one node (``lienthong run`` on two machines, the same configuration, the store in
one PostgreSQL database) both try to take the session-level advisory lock :func:`lock_key` of the
node code. The one that holds it is active: it opens the store as its exclusive writer (which
fences off any earlier holder: :class:`~lienthong.store.postgres.PostgresStore`) and works. The
other waits in ``pg_advisory_lock``, connected to nothing else: no broker, no API.

The server releases the lock when the holder's session ends. A daemon that dies (SIGKILL, a
crash) closes its connection with its process, so the server ends the session at once and the
waiting daemon gets the lock within a round trip. A machine that vanishes (power, network) sends
nothing; the lock connection asks the server to probe it with TCP keepalives (idle 5 s, every
2 s, 3 probes), so its session ends about 11 s later. The active daemon checks its own lock
connection every ``store.lock_check_s``; once it fails it stops at once (:class:`LostActiveLock`)
and systemd restarts it, as a standby.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable

import asyncpg

from lienthong.backoff import Backoff
from lienthong.config import StoreSettings, store_password
from lienthong.errors import ConfigError, LienthongError
from lienthong.logs import get_logger
from lienthong.store.postgres import connect_args

_log = get_logger("lienthong.standby")

KEEPALIVES = {
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
}
"""The server probes a silent lock connection this way and ends its session (and lock) after
about 11 s."""


_REFUSED = (asyncpg.InvalidAuthorizationSpecificationError, asyncpg.InvalidCatalogNameError)
"""A wrong password, role or database name: the configuration is wrong, waiting cures nothing."""


class LostActiveLock(LienthongError):
    """The active daemon's lock connection failed: another daemon may take over at any moment,
    so this one stops."""


def lock_key(node: str) -> int:
    """The advisory lock key (a signed 64-bit number) of node ``node``."""
    digest = hashlib.sha256(f"lienthong active daemon {node}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class ActiveLock:
    """The lock that makes this daemon the active one of node ``node``."""

    def __init__(self, node: str, settings: StoreSettings) -> None:
        self.node = node
        self.key = lock_key(node)
        self.settings = settings
        self._args = connect_args(settings, store_password(settings))
        self._args["server_settings"] = {**self._args["server_settings"], **KEEPALIVES}
        # Its one long statement, the wait for the lock, may last for months.
        self._args["command_timeout"] = None
        self._conn: asyncpg.Connection | None = None
        self.held = False

    async def acquire(self, on_standby: Callable[[str], None] = lambda reason: None) -> None:
        """Return once this daemon holds the lock. While another daemon holds it, calls
        ``on_standby`` with the reason once and waits; a database that cannot be reached is
        tried again with backoff (the reason given too). A database that refuses the role,
        its password or the database name raises :class:`ConfigError`."""
        backoff = Backoff(base=0.5, cap=10.0, jitter=0.2)
        told = ""
        while True:
            try:
                conn = await asyncpg.connect(**self._args)
            except _REFUSED as exc:
                raise ConfigError(
                    f"the database refuses this daemon: {exc}", key="store.dsn"
                ) from exc
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                told = self._tell(on_standby, told, f"cannot reach the store's database: {exc}")
                await asyncio.sleep(backoff.next_delay())
                continue
            try:
                if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key):
                    reason = (
                        f"standby: another daemon of {self.node} is active; this one takes over"
                        " when it stops"
                    )
                    told = self._tell(on_standby, told, reason)
                    # Waits in the server until the holder's session ends.
                    await conn.execute("SELECT pg_advisory_lock($1)", self.key)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                await _close(conn)
                told = self._tell(on_standby, told, f"lost the store's database: {exc}")
                await asyncio.sleep(backoff.next_delay())
                continue
            except BaseException:
                await _close(conn)
                raise
            self._conn = conn
            self.held = True
            _log.info("active_lock_taken", node=self.node)
            return

    @staticmethod
    def _tell(on_standby: Callable[[str], None], told: str, reason: str) -> str:
        if reason != told:
            _log.info("standby", reason=reason)
            on_standby(reason)
        return reason

    async def hold(self) -> None:
        """Check the lock connection every ``lock_check_s`` while this daemon is active;
        raise :class:`LostActiveLock` once it fails (never returns otherwise)."""
        conn = self._conn
        if conn is None:
            raise LostActiveLock("the active lock is not held")
        interval = self.settings.lock_check_s
        while True:
            await asyncio.sleep(interval)
            try:
                await conn.fetchval("SELECT 1", timeout=max(2 * interval, 2.0))
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                self.held = False
                raise LostActiveLock(
                    f"lost the connection that holds the active lock of {self.node}"
                    f" ({exc or type(exc).__name__}): stopping, another daemon may take over"
                ) from exc

    async def release(self) -> None:
        """Let the lock go (the standby takes over)."""
        conn, self._conn = self._conn, None
        self.held = False
        if conn is not None:
            await _close(conn)


async def _close(conn: asyncpg.Connection) -> None:
    with contextlib.suppress(Exception):
        await conn.close(timeout=2)
