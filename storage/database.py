"""Engines and schema migrations for the two supported databases.

SQLite (through aiosqlite) is the embedded default; PostgreSQL (through asyncpg) is for real
deployments. Plain URLs (`postgresql://`, `sqlite:///`) are given their async driver here, so users
never need to know the driver names.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Self, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from storage.errors import InvalidRequest, SchemaOutOfDate, StorageError, YmeraError
from storage import sqlite_thread
from storage.private_files import private_sqlite_file
from storage.sqlite_thread import sqlite_pragmas

MIGRATIONS = Path(__file__).parent / "migrations"
_ASYNC_DRIVERS = {"postgresql": "postgresql+asyncpg", "postgres": "postgresql+asyncpg",
                  "sqlite": "sqlite+aiosqlite"}
# What a store turns into `StorageError`: SQLAlchemy's errors, and the socket errors a driver
# raises without them while the server is down or restarting (asyncpg's connect raises
# `ConnectionRefusedError` as it is; `TimeoutError` is an `OSError` too).
DATABASE_FAILURES = (SQLAlchemyError, OSError)
T = TypeVar("T")


def async_url(url: str) -> URL:
    """The URL with its async driver, e.g. `postgresql://h/db` → `postgresql+asyncpg://h/db`."""
    try:
        parsed = make_url(url)
    except Exception as exc:
        raise InvalidRequest(f"database URL {url!r} is not a valid SQLAlchemy URL") from exc
    if parsed.drivername in _ASYNC_DRIVERS:
        parsed = parsed.set(drivername=_ASYNC_DRIVERS[parsed.drivername])
    if parsed.drivername not in ("postgresql+asyncpg", "sqlite+aiosqlite"):
        raise InvalidRequest(
            f"unsupported database {parsed.drivername!r}: use sqlite:///PATH or postgresql://…"
        )
    return parsed


def create_engine(url: str | URL) -> AsyncEngine:
    """An async engine for `url`. SQLite files get their folder, WAL and full fsync on commit,
    and are readable by their owner only (`storage.private_files`)."""
    parsed = url if isinstance(url, URL) else async_url(url)
    if parsed.drivername.startswith("sqlite"):
        if parsed.database and parsed.database != ":memory:":
            private_sqlite_file(Path(parsed.database).expanduser())
        engine = create_async_engine(parsed, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        return engine
    return create_async_engine(parsed, pool_size=5, max_overflow=5, pool_pre_ping=True)


def _alembic_config(url: URL) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.render_as_string(hide_password=False))
    return config


def head_revision() -> str:
    script = ScriptDirectory.from_config(_alembic_config(make_url("sqlite://")))
    return script.get_current_head() or ""


def migrate(url: str) -> None:
    """Bring the database at `url` to the latest schema. Safe to run again; never drops data."""
    try:
        command.upgrade(_alembic_config(async_url(url)), "head")
    except SQLAlchemyError as exc:
        raise StorageError(f"migrating {async_url(url).render_as_string()} failed: {exc}") from exc


async def migrate_async(url: str) -> None:
    """`migrate` from inside an event loop (Alembic's environment runs its own loop)."""
    await asyncio.to_thread(migrate, url)


def _current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


async def ensure_schema_current(engine: AsyncEngine) -> None:
    """Raise `SchemaOutOfDate` unless the database is at the latest migration."""
    try:
        async with engine.connect() as connection:
            current = await connection.run_sync(_current_revision)
    except DATABASE_FAILURES as exc:
        raise StorageError(f"cannot reach the database: {_reason(exc)}") from exc
    head = head_revision()
    if current != head:
        raise SchemaOutOfDate(
            f"database schema is at {current or 'nothing'}, the platform needs {head}: "
            "run `ymera migrate`",
            {"current": current, "head": head},
        )


def _reason(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, SQLAlchemyError) else f"{type(exc).__name__}: {exc}"


class EngineStore:
    """Base of the stores: one async engine, opened only on a database at the latest schema,
    with reads and transactions whose failures (a database error, or the server down or
    restarting) become `StorageError`. A store is also an
    async context manager that closes it: `async with await TaskStore.open(url) as store:`."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    @classmethod
    async def open(cls, url: str) -> Self:
        """Connect to `url` and check its schema is current (it never migrates by itself)."""
        engine = create_engine(url)
        try:
            await ensure_schema_current(engine)
        except BaseException:
            await engine.dispose()
            raise
        return cls(engine)

    async def close(self) -> None:
        sqlite_thread.close_for(self.engine)
        await self.engine.dispose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def _fetch(self, statement: Any) -> list[Any]:
        return (await self._fetch_all(statement))[0]

    async def _fetch_all(self, *statements: Any) -> list[list[Any]]:
        """The rows of each statement, read in one transaction (one consistent view)."""
        try:
            one_hop = sqlite_thread.for_engine(self.engine)
            if one_hop is not None:
                return await one_hop.read(_rows_of, statements)
            async with self.engine.connect() as connection:
                return [list((await connection.execute(s)).all()) for s in statements]
        except DATABASE_FAILURES as exc:
            raise StorageError(f"reading from the database failed: {_reason(exc)}") from exc

    async def _run_transaction(self, doing: str, work: Callable[..., T], *args: Any,
                               conflict: YmeraError | None = None) -> T:
        """`work(connection, *args)`, synchronous SQLAlchemy code, in one transaction, with
        `_transaction`'s errors. On a SQLite file the whole transaction is one thread hop
        (`storage.sqlite_thread`); elsewhere it runs on the async connection (`run_sync`)."""
        with _storage_failures(doing, conflict):
            one_hop = sqlite_thread.for_engine(self.engine)
            if one_hop is not None:
                return await one_hop.transaction(work, *args)
            async with self.engine.begin() as connection:
                return await connection.run_sync(work, *args)

    @contextlib.asynccontextmanager
    async def _transaction(self, doing: str, conflict: YmeraError | None = None
                           ) -> AsyncIterator[AsyncConnection]:
        """A connection in a transaction, committed when the block ends. A database failure
        becomes `StorageError` ("<doing> failed: ..."), or `conflict` when given and a
        constraint refused the write; the block's own exceptions pass through."""
        with _storage_failures(doing, conflict):
            async with self.engine.begin() as connection:
                yield connection


@contextlib.contextmanager
def _storage_failures(doing: str, conflict: YmeraError | None) -> Iterator[None]:
    """A database failure inside becomes `StorageError` ("<doing> failed: ..."), or `conflict`
    when given and a constraint refused the write."""
    try:
        yield
    except IntegrityError as exc:
        if conflict is None:
            raise StorageError(f"{doing} failed: {exc}") from exc
        raise conflict from exc
    except DATABASE_FAILURES as exc:
        raise StorageError(f"{doing} failed: {_reason(exc)}") from exc


def _rows_of(connection: Connection, statements: tuple[Any, ...]) -> list[list[Any]]:
    return [list(connection.execute(s).all()) for s in statements]
