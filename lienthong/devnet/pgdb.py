"""Throw-away PostgreSQL databases for tests, benchmarks and devnet runs.

:class:`ScratchDatabase` creates a database with a fresh name on the server that
``LIENTHONG_TEST_PG`` names (default: the role ``scripts/setup`` makes, on 127.0.0.1:5432), and
drops it again, closing whatever still uses it (a daemon killed with SIGKILL leaves sessions the
server has not noticed yet).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from types import TracebackType
from typing import Self

import asyncpg

ADMIN_DSN = "postgresql://lienthong_test:lienthong_test@127.0.0.1:5432/postgres"
"""The server and role of the tests (see ``scripts/setup``), connected to its ``postgres``
database to create and drop others."""


def admin_dsn() -> str:
    """``LIENTHONG_TEST_PG`` if set, else :data:`ADMIN_DSN`."""
    return os.environ.get("LIENTHONG_TEST_PG", ADMIN_DSN)


def _with_database(dsn: str, name: str) -> str:
    head, _, tail = dsn.partition("?")
    base = head.rsplit("/", 1)[0]
    return f"{base}/{name}" + (f"?{tail}" if tail else "")


class ScratchDatabase:
    """A database made for one run: :attr:`dsn` once created, gone after :meth:`drop`."""

    def __init__(self, prefix: str = "lienthong", admin: str | None = None) -> None:
        self.admin = admin or admin_dsn()
        self.name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.dsn = _with_database(self.admin, self.name)

    async def create(self) -> str:
        """Create the database; its DSN."""
        conn = await asyncpg.connect(self.admin)
        try:
            await conn.execute(f'CREATE DATABASE "{self.name}"')
        finally:
            await conn.close()
        return self.dsn

    async def drop(self) -> None:
        """Drop the database, ending the sessions still connected to it."""
        conn = await asyncpg.connect(self.admin)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        finally:
            await conn.close()

    def create_sync(self) -> str:
        """:meth:`create` outside an event loop."""
        return asyncio.run(self.create())

    def drop_sync(self) -> None:
        """:meth:`drop` outside an event loop."""
        asyncio.run(self.drop())

    async def __aenter__(self) -> Self:
        await self.create()
        return self

    async def __aexit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.drop()
