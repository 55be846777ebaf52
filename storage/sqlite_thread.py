"""SQLite statements run in one thread hop per transaction instead of several per statement.

The async SQLite driver (aiosqlite) runs every DBAPI call of every statement in its own thread
and wakes the event loop for each: a transaction of five small statements costs about 1.4 ms
on a 2-core machine, of which the work is a fifth. A store's hot transactions and reads run
instead as plain synchronous SQLAlchemy code on a companion engine of the same file
(`pysqlite`, the same pragmas), handed to a worker thread in one piece: the same transaction
then costs about 0.3 ms. Writes go through one thread (SQLite takes one writer at a time
anyway), reads through two of their own so that a long read never holds a commit back.

The companion belongs to the async engine it mirrors (`for_engine`) and is closed with it
(`close_for`). In-memory databases have none: each connection would see a database of its own.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

T = TypeVar("T")

READ_THREADS = 2


def sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    """WAL, a full fsync on commit, foreign keys, and a 10 s wait for a busy database."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.close()


class SqliteThread:
    """A synchronous engine of one SQLite file and the threads that use it."""

    def __init__(self, database: str) -> None:
        # check_same_thread off: a pooled connection may serve any of this companion's threads,
        # one at a time (the pool hands each to one user).
        self.engine: Engine = create_engine(
            f"sqlite:///{database}", connect_args={"timeout": 30, "check_same_thread": False})
        event.listen(self.engine, "connect", sqlite_pragmas)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="ymera-sqlite-write")
        self._readers = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="ymera-sqlite-read")

    async def transaction(self, work: Callable[..., T], *args: Any) -> T:
        """`work(connection, *args)` inside one transaction, committed when it returns."""
        return await asyncio.get_running_loop().run_in_executor(
            self._writer, self._in_transaction, work, args)

    async def read(self, work: Callable[..., T], *args: Any) -> T:
        """`work(connection, *args)` on a connection of its own (one consistent view)."""
        return await asyncio.get_running_loop().run_in_executor(
            self._readers, self._on_connection, work, args)

    def _in_transaction(self, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self.engine.begin() as connection:
            return work(connection, *args)

    def _on_connection(self, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        with self.engine.connect() as connection:
            return work(connection, *args)

    def close(self) -> None:
        self._writer.shutdown(wait=True)
        self._readers.shutdown(wait=True)
        self.engine.dispose()


_companions: weakref.WeakKeyDictionary[AsyncEngine, SqliteThread] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def for_engine(engine: AsyncEngine) -> SqliteThread | None:
    """The companion of `engine` (made on first use), or None when it is not a SQLite file."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return None
    with _lock:
        companion = _companions.get(engine)
        if companion is None:
            companion = _companions[engine] = SqliteThread(url.database)
        return companion


def close_for(engine: AsyncEngine) -> None:
    """Close `engine`'s companion, if it has one."""
    with _lock:
        companion = _companions.pop(engine, None)
    if companion is not None:
        companion.close()

