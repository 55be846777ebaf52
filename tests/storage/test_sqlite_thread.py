"""A SQLite file's hot transactions and reads run on a synchronous companion engine in worker
threads (`storage.sqlite_thread`), beside the store's async engine that everything else uses:
what either commits, the other reads; a constraint refusal there is the same clear error and
stores nothing; and a closed store leaves no thread or connection of its own behind."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import select, text

from storage import sqlite_thread
from storage.database import create_engine, migrate_async
from storage.errors import StorageError
from storage.models import tasks_table
from storage.task_store import TaskStore, WriteBatch
from tests.storage.test_task_store import task_row


@pytest.fixture
async def sqlite_store(tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'one-hop.db'}"
    await migrate_async(url)
    store = await TaskStore.open(url)
    yield store
    await store.close()


def _companion_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("ymera-sqlite-")]


async def test_what_one_path_commits_the_other_reads(sqlite_store: TaskStore) -> None:
    first = task_row(description="written in one hop")
    await sqlite_store.apply(WriteBatch(new_tasks=[first]))
    async with sqlite_store.engine.connect() as connection:  # the async engine's own view
        rows = (await connection.execute(select(tasks_table.c.description)
                                         .where(tasks_table.c.id == first["id"]))).all()
    assert [r.description for r in rows] == ["written in one hop"]

    async with sqlite_store._transaction("renaming") as connection:
        await connection.execute(text("UPDATE tasks SET description = 'renamed' WHERE id = :i"),
                                 {"i": first["id"]})
    assert (await sqlite_store.get_task(first["id"])).description == "renamed"


async def test_a_refused_write_stores_nothing_and_says_what_failed(
        sqlite_store: TaskStore) -> None:
    kept = task_row()
    await sqlite_store.apply(WriteBatch(new_tasks=[kept]))
    fresh = task_row()
    with pytest.raises(StorageError, match="writing 2 records failed.*UNIQUE"):
        await sqlite_store.apply(WriteBatch(new_tasks=[fresh, dict(kept)]))
    assert set(await sqlite_store.get_tasks([kept["id"], fresh["id"]])) == {kept["id"]}


async def test_a_closed_store_leaves_no_thread_of_its_own(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'closed.db'}"
    await migrate_async(url)
    before = _companion_threads()
    store = await TaskStore.open(url)
    row = task_row()
    await store.apply(WriteBatch(new_tasks=[row]))
    await store.get_task(row["id"])
    assert len(_companion_threads()) > len(before)
    await store.close()
    assert _companion_threads() == before
    assert sqlite_thread.for_engine(create_engine("sqlite:///:memory:")) is None
