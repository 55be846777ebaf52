"""Throwaway databases for tests: a fresh SQLite file or a fresh PostgreSQL database each time.

The databases come back empty (not migrated). PostgreSQL is found at `YMERA_TEST_POSTGRES_URL`
(an admin URL allowed to create databases); when it cannot be reached the test is skipped with the
reason, or fails under `CI=true`, where every service is expected to be up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import asyncpg
import pytest
from sqlalchemy.engine import make_url

POSTGRES_ADMIN_URL = os.environ.get(
    "YMERA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
DATABASE_KINDS = ("sqlite", "postgresql")
CONNECT_TIMEOUT_S = 2.0
TEST_DATABASE_PREFIX = "ymera_test_"

T = TypeVar("T")


def running_in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require_service(name: str, reachable: bool, reason: str) -> None:
    """Skip the calling test when `name` is unreachable, or fail it under `CI=true`."""
    if reachable:
        return
    if running_in_ci():
        pytest.fail(f"{name} is required when CI=true: {reason}", pytrace=False)
    pytest.skip(reason)


def _run(make_coroutine: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to completion on its own loop in a worker thread, so callers may be
    inside or outside an event loop and no loop of theirs is touched."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, make_coroutine()).result()


async def _admin_connection() -> asyncpg.Connection:
    return await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=CONNECT_TIMEOUT_S)


@functools.lru_cache(maxsize=1)
def _postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used, or None. Asked once per session: a dead server costs
    one connect timeout, not one per test."""

    async def probe() -> None:
        connection = await _admin_connection()
        await connection.close()

    try:
        _run(probe)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def postgres_reachable() -> bool:
    return _postgres_problem() is None


def _postgres_unreachable_reason() -> str:
    admin = make_url(POSTGRES_ADMIN_URL)
    return (
        f"PostgreSQL is not reachable at {admin.host or 'localhost'}:{admin.port or 5432} "
        f"({_postgres_problem()}). Start it (for example `pg_ctlcluster 15 main start`, or "
        "`docker run -d -p 5432:5432 -e POSTGRES_HOST_AUTH_METHOD=trust postgres:15`) "
        "or point YMERA_TEST_POSTGRES_URL at an admin URL that may create databases."
    )


def fresh_postgres_database() -> str:
    """Create an empty, uniquely named PostgreSQL database and return its URL."""
    require_service("PostgreSQL", postgres_reachable(), _postgres_unreachable_reason())
    name = f"{TEST_DATABASE_PREFIX}{uuid.uuid4().hex[:16]}"

    async def create() -> None:
        connection = await _admin_connection()
        try:
            await connection.execute(f'CREATE DATABASE "{name}"')
        finally:
            await connection.close()

    _run(create)
    return make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop a database made by `fresh_postgres_database`, closing whatever is still connected."""
    name = make_url(url).database or ""
    if not name.startswith(TEST_DATABASE_PREFIX):
        raise ValueError(f"refusing to drop {name!r}: not a database these helpers created")

    async def drop() -> None:
        connection = await _admin_connection()
        try:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await connection.close()

    _run(drop)


def fresh_sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ymera.db'}"


def database_url_fixture(kind: str, tmp_path: Path) -> Iterator[str]:
    """Body of a fixture: yield the URL of a fresh, empty database of `kind`, then remove it.

        @pytest.fixture(params=DATABASE_KINDS)
        def empty_database_url(request, tmp_path):
            yield from database_url_fixture(request.param, tmp_path)
    """
    if kind == "sqlite":
        yield fresh_sqlite_url(tmp_path)  # tmp_path is removed by pytest
    elif kind == "postgresql":
        url = fresh_postgres_database()
        try:
            yield url
        finally:
            drop_postgres_database(url)
    else:
        raise ValueError(f"unknown database kind {kind!r}; expected one of {DATABASE_KINDS}")
