"""The store a node's configuration names: SQLite under ``node.state_dir`` (the default), or
PostgreSQL at ``store.dsn``."""

from __future__ import annotations

from pathlib import Path

from lienthong.config import StoreSettings, check_store, store_password
from lienthong.errors import LienthongError
from lienthong.store.postgres import PostgresStore
from lienthong.store.sqlite import DB_NAME, SqliteStore
from lienthong.store.sqlstore import SqlStore


def store_for(state_dir: Path, settings: StoreSettings, *, exclusive: bool = False) -> SqlStore:
    """The store of ``[store]`` (checked first: :class:`~lienthong.errors.ConfigError`);
    ``exclusive`` marks the active daemon of a PostgreSQL pair."""
    check_store(settings)
    if settings.backend == "postgresql":
        return PostgresStore(
            state_dir, settings, password=store_password(settings), exclusive=exclusive
        )
    return SqliteStore(state_dir, settings)


def existing_store(state_dir: Path, settings: StoreSettings) -> SqlStore:
    """:func:`store_for`, for commands that read a node's state: with SQLite, refuses a folder
    that holds no store database instead of creating one."""
    if settings.backend == "sqlite" and not (state_dir / DB_NAME).exists():
        raise LienthongError(f"no store database in {state_dir} (node.state_dir)")
    return store_for(state_dir, settings)
