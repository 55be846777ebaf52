"""Every storage test runs against SQLite and against PostgreSQL, each time on a new database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from storage.database import migrate_async
from storage.task_store import TaskStore
from tests.support.databases import DATABASE_KINDS, database_url_fixture


@pytest.fixture(params=DATABASE_KINDS, ids=DATABASE_KINDS)
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A new database with no schema at all; removed after the test."""
    yield from database_url_fixture(request.param, tmp_path)


@pytest.fixture
async def database_url(empty_database_url: str) -> str:
    """A new database migrated to the latest schema."""
    await migrate_async(empty_database_url)
    return empty_database_url


@pytest.fixture
async def store(database_url: str) -> AsyncIterator[TaskStore]:
    async with await TaskStore.open(database_url) as task_store:
        yield task_store
