"""What only the PostgreSQL store does: fencing a daemon that was taken over, every package in
its row, a lost connection, and the ``[store]`` settings it needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from lienthong.config import StoreSettings, check_store, parse_config
from lienthong.devnet.pgdb import ScratchDatabase
from lienthong.errors import ConfigError
from lienthong.store import PackageMeta, PackageState, StoreTransientError
from lienthong.store.postgres import NotActive, PostgresStore

T0 = 1_700_000_000.0


@pytest.fixture
async def database() -> AsyncIterator[ScratchDatabase]:
    """A new, empty database, dropped after the test."""
    async with ScratchDatabase("lienthong_pg") as db:
        yield db


def pkg(n: int, size: int = 200) -> tuple[bytes, PackageMeta]:
    data = f"<edXML>{n}</edXML>".encode().ljust(size, b" ")
    return data, PackageMeta.for_bytes(data, f"doc-{n}", "edoc", "000.00.00.H49", ["x"])


async def test_a_daemon_taken_over_can_commit_nothing(
    database: ScratchDatabase, tmp_path: Path
) -> None:
    """Once a second daemon opens the store as the active one, every write of the first fails
    (it is no longer active), and what the second writes is kept."""
    settings = StoreSettings(backend="postgresql", dsn=database.dsn)
    async with PostgresStore(tmp_path / "a", settings, exclusive=True) as first:
        await first.put_package(*pkg(1), T0)
        async with PostgresStore(tmp_path / "b", settings, exclusive=True) as second:
            assert second.epoch == (first.epoch or 0) + 1
            with pytest.raises(NotActive, match="another daemon has taken the store over"):
                await first.put_package(*pkg(2), T0)
            assert first.superseded
            await second.put_package(*pkg(3), T0)
            stored = {r.meta.document_id for r in await second.packages(PackageState.STORED)}
            assert stored == {"doc-1", "doc-3"}
            assert (await second.journal_verify()).ok


async def test_large_package_lives_in_its_row(database: ScratchDatabase, tmp_path: Path) -> None:
    """A package far above the inline limit is kept in the database, not in a file."""
    settings = StoreSettings(backend="postgresql", dsn=database.dsn)
    data, meta = pkg(1, size=3 * 1024 * 1024)
    async with PostgresStore(tmp_path / "state", settings) as store:
        await store.put_package(data, meta, T0)
    assert not (tmp_path / "state" / "packages").exists()
    async with PostgresStore(tmp_path / "state", settings) as store:
        assert await store.read_package(meta.sha256) == data


async def test_lost_connection_stops_intake_then_reconnects(
    database: ScratchDatabase, tmp_path: Path
) -> None:
    """A writer connection the server ends fails the write with the reason and stops intake;
    the next probe connects again and intake resumes."""
    settings = StoreSettings(backend="postgresql", dsn=database.dsn)
    async with PostgresStore(tmp_path / "state", settings) as store:
        await store.put_package(*pkg(1), T0)
        admin = await asyncpg.connect(database.dsn)
        try:
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await admin.close()
        with pytest.raises(StoreTransientError, match="database error while committing"):
            await store.put_package(*pkg(2), T0)
        assert store.intake_blocked is not None
        assert await store.resume_intake()
        await store.put_package(*pkg(2), T0)
        assert len(await store.packages(PackageState.STORED)) == 2


@pytest.mark.parametrize(
    ("store_section", "key", "message"),
    [
        ('backend = "postgresql"', "store.dsn", "is required"),
        ('backend = "mysql"', "store.backend", "must be one of sqlite, postgresql"),
        ('backend = "postgresql"\ndsn = "host=db"', "store.dsn", "must be a PostgreSQL URL"),
        (
            'backend = "postgresql"\ndsn = "postgresql://u@h/d"\npassword_file = "/nonexistent"',
            "store.password_file",
            "cannot read the password file",
        ),
    ],
)
def test_store_settings_are_checked_at_start(store_section: str, key: str, message: str) -> None:
    """A PostgreSQL store without its DSN, an unknown backend, a DSN that is no URL and an
    unreadable password file are refused, naming the setting."""
    text = f'[node]\ncode = "000.00.00.G22"\n[store]\n{store_section}\n'
    with pytest.raises(ConfigError, match=message) as caught:
        check_store(parse_config(text).store)
    assert caught.value.key == key
