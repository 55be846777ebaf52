"""The SQLite database and its folder are readable by their owner only (SQLite-only: a
PostgreSQL database has no file here)."""

from __future__ import annotations

import stat
from pathlib import Path

from storage.database import migrate_async
from storage.task_store import TaskStore
from tests.storage.test_task_store import submit, task_row


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_a_new_database_and_its_wal_are_private(tmp_path: Path) -> None:
    database = tmp_path / "state" / "ymera.db"
    url = f"sqlite:///{database}"

    await migrate_async(url)
    async with await TaskStore.open(url) as store:
        await submit(store, task_row())  # a write: the -wal and -shm files exist now
        companions = [database.with_name(database.name + s) for s in ("-wal", "-shm")]
        assert all(file.exists() for file in companions)
        assert [mode(file) for file in companions] == [0o600, 0o600]
    assert mode(database) == 0o600 and mode(database.parent) == 0o700


async def test_an_existing_world_readable_database_is_tightened_on_open(tmp_path: Path) -> None:
    database = tmp_path / "ymera.db"
    url = f"sqlite:///{database}"
    await migrate_async(url)
    for file in (database, database.with_name("ymera.db-wal")):
        file.touch()
        file.chmod(0o644)

    async with await TaskStore.open(url) as store:
        assert await store.count_by_status() == {}
        assert mode(database) == mode(database.with_name("ymera.db-wal")) == 0o600
