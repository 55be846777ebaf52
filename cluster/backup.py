"""Backups that restore: a consistent copy of the platform's database with a manifest, and
the way back into a fresh (or, with `force`, an existing) database.

A backup is a directory holding the database copy and `manifest.json` (engine, time, schema
revision, tasks by status, the copy's sha256 and size). Guarantees:
- the copy is consistent while the platform runs: SQLite's online backup API copies one
  snapshot (WAL readers never block the writer); PostgreSQL's `pg_dump` dumps the snapshot the
  manifest's figures were read in (`--snapshot`), so the manifest describes exactly the copy;
- a backup appears whole or not at all: it is written into a hidden sibling directory, synced,
  then renamed into place; an existing destination is never overwritten; the directory is
  private (0700) and its files 0600;
- what a task acknowledged after the backup began has is not in it (the recovery point):
  only the next backup has it;
- a restore checks before it changes anything: the manifest must be whole, the copy's sha256
  must match it, its schema revision must be one this code knows (an older one is migrated with
  the normal migrate path once restored), the engine must match the target's, and the target
  must be empty unless `force`; each refusal is a clear error and the target is left as it was;
- no silent fallback: PostgreSQL needs `pg_dump`/`pg_restore` on PATH, and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sqlite3
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import URL

from cluster import backup_postgres
from storage.database import (
    DATABASE_FAILURES, MIGRATIONS, async_url, create_engine, head_revision, migrate_async)
from storage.errors import Conflict, InvalidRequest, StorageError
from storage.models import TASKS
from storage.private_files import FILE_MODE, private_directory, private_sqlite_file

MANIFEST = "manifest.json"
FORMAT = "ymera-backup"
FORMAT_VERSION = 1
DATA_FILES = {"sqlite": "database.sqlite3", "postgresql": "database.dump"}
_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What a backup holds, written next to the copy as `manifest.json`."""

    engine: str
    created_at: str
    schema_revision: str
    file: str
    sha256: str
    size_bytes: int
    tasks_by_status: dict[str, int]
    tool: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, **dataclasses.asdict(self)}

    @classmethod
    def read(cls, backup: Path) -> Manifest:
        """The manifest of the backup directory `backup`; `InvalidRequest` naming what is wrong."""
        path = backup / MANIFEST
        if not backup.is_dir():
            raise InvalidRequest(f"{backup} is not a backup: no such directory",
                                 {"field": "backup"})
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as exc:
            raise InvalidRequest(f"{backup} is not a backup: it has no {MANIFEST}",
                                 {"field": "backup"}) from exc
        except (OSError, ValueError) as exc:
            raise InvalidRequest(f"the manifest {path} cannot be read: {exc}",
                                 {"field": "backup"}) from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InvalidRequest(f"{path} is not a YMERA backup manifest", {"field": "backup"})
        if data.get("format_version") != FORMAT_VERSION:
            raise InvalidRequest(f"{path} has format version {data.get('format_version')!r}; "
                                 f"this code reads version {FORMAT_VERSION}",
                                 {"field": "backup"})
        fields = {f.name for f in dataclasses.fields(cls)}
        try:
            manifest = cls(**{k: v for k, v in data.items() if k in fields})
        except TypeError as exc:
            raise InvalidRequest(f"{path} is incomplete: {exc}", {"field": "backup"}) from exc
        if manifest.engine not in DATA_FILES or manifest.file != DATA_FILES[manifest.engine]:
            raise InvalidRequest(f"{path} names engine {manifest.engine!r} and file "
                                 f"{manifest.file!r}, which do not go together",
                                 {"field": "backup"})
        return manifest


@dataclasses.dataclass(frozen=True)
class Restored:
    """What a restore did: the backup's manifest, where it went, and the schema it is at."""

    backup: str
    database: str
    manifest: Manifest
    migrated_from: str | None
    schema_revision: str
    tasks_by_status: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "manifest": self.manifest.to_json()}


def engine_of(database_url: str) -> tuple[str, URL]:
    """`("sqlite" | "postgresql", the URL with its async driver)`."""
    url = async_url(database_url)
    return ("sqlite" if url.drivername.startswith("sqlite") else "postgresql"), url


def shown(url: URL) -> str:
    """A database URL fit for printing, as users write it: no driver, the password hidden."""
    plain = "sqlite" if url.drivername.startswith("sqlite") else "postgresql"
    return url.set(drivername=plain).render_as_string(hide_password=True)


def default_destination(state_path: Path, engine: str, now: datetime | None = None) -> Path:
    """Where `ymera backup` writes when given no destination: the state directory's
    `backups/`, one directory per backup named for its engine and UTC time."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%dT%H%M%S.%fZ")
    return private_directory(state_path / "backups") / f"ymera-{engine}-{stamp}"


async def take_backup(database_url: str, destination: Path) -> Manifest:
    """Back the database at `database_url` up into the new directory `destination`."""
    engine, url = engine_of(database_url)
    destination = destination.expanduser().absolute()
    if destination.exists():
        raise Conflict(f"{destination} already exists; a backup never overwrites one: "
                       "choose a new destination", {"field": "destination"})
    if not destination.parent.is_dir():
        raise InvalidRequest(f"{destination.parent} is not a directory",
                             {"field": "destination"})
    partial = Path(tempfile.mkdtemp(prefix=f".{destination.name}.partial-",
                                    dir=destination.parent))  # mode 0700
    try:
        data = partial / DATA_FILES[engine]
        os.close(os.open(data, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
        created_at = datetime.now(timezone.utc).isoformat()
        tool = f"SQLite {sqlite3.sqlite_version} online backup"
        if engine == "sqlite":
            revision, counts = await asyncio.to_thread(_copy_sqlite, _sqlite_path(url), data)
        else:
            revision, counts, tool = await backup_postgres.dump(url, data)
        os.chmod(data, FILE_MODE)
        digest, size = await asyncio.to_thread(file_digest, data)
        manifest = Manifest(engine=engine, created_at=created_at, schema_revision=revision,
                            file=data.name, sha256=digest, size_bytes=size,
                            tasks_by_status=counts, tool=tool)
        _write_private(partial / MANIFEST, json.dumps(manifest.to_json(), indent=2) + "\n")
        _sync(data)
        _sync(partial)
        os.rename(partial, destination)
        _sync(destination.parent)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return manifest


async def restore_backup(backup: Path, database_url: str, force: bool = False) -> Restored:
    """Restore the backup directory `backup` into the database at `database_url`, then bring
    it to this code's schema. Refuses (changing nothing) a corrupt or foreign backup, a newer
    schema, another engine, and a non-empty target unless `force`."""
    engine, url = engine_of(database_url)
    backup = backup.expanduser().absolute()
    manifest = Manifest.read(backup)
    if manifest.engine != engine:
        raise InvalidRequest(f"{backup} is a {manifest.engine} backup; it restores into a "
                             f"{manifest.engine} database, not {shown(url)}",
                             {"field": "database_url"})
    data = backup / manifest.file
    if not data.is_file():
        raise InvalidRequest(f"{backup} is incomplete: {manifest.file} is missing",
                             {"field": "backup"})
    digest, size = await asyncio.to_thread(file_digest, data)
    if digest != manifest.sha256 or size != manifest.size_bytes:
        raise InvalidRequest(
            f"{data} is corrupt: its sha256 is {digest} ({size} bytes), the manifest says "
            f"{manifest.sha256} ({manifest.size_bytes} bytes); nothing was restored",
            {"field": "backup", "sha256": digest, "expected_sha256": manifest.sha256})
    _check_revision(manifest.schema_revision)
    if engine == "sqlite":
        target = _sqlite_path(url)
        tables = await asyncio.to_thread(_sqlite_tables, target)
    else:
        tables = await backup_postgres.table_count(url)
    if tables and not force:
        raise Conflict(f"the target database {shown(url)} is not empty ({tables} tables); "
                       "restore into an empty database, or pass --force to replace what it "
                       "holds", {"field": "database_url", "tables": tables})
    if engine == "sqlite":
        await asyncio.to_thread(_restore_sqlite, data, _sqlite_path(url))
    else:
        await backup_postgres.restore(url, data, clean=bool(tables))
    head = head_revision()
    migrated_from = None
    if manifest.schema_revision != head:
        await migrate_async(url.render_as_string(hide_password=False))
        migrated_from = manifest.schema_revision
    revision, counts = await _describe(url)
    return Restored(backup=str(backup), database=shown(url), manifest=manifest,
                    migrated_from=migrated_from, schema_revision=revision,
                    tasks_by_status=counts)


def file_digest(path: Path) -> tuple[str, int]:
    """The sha256 (hex) and size of a file."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as file:
        while chunk := file.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _check_revision(revision: str) -> None:
    script = ScriptDirectory(str(MIGRATIONS))
    known = {r.revision for r in script.walk_revisions()}
    if revision not in known:
        raise InvalidRequest(
            f"the backup's schema revision {revision!r} is newer than this code's "
            f"(head {script.get_current_head()}) or unknown to it: restore it with the YMERA "
            "version that took it, or a later one", {"field": "backup",
                                                    "schema_revision": revision})


def _sqlite_path(url: URL) -> Path:
    if not url.database or url.database == ":memory:":
        raise InvalidRequest("an in-memory SQLite database cannot be backed up or restored "
                             "into; use sqlite:///PATH", {"field": "database_url"})
    return Path(url.database).expanduser().absolute()


def _copy_sqlite(source: Path, target: Path) -> tuple[str, dict[str, int]]:
    """Copy one consistent snapshot of `source` into `target` (self-contained: rollback
    journal, not WAL); return the copy's schema revision and tasks by status."""
    if not source.is_file():
        raise InvalidRequest(f"there is no database at {source}: nothing to back up (check "
                             "YMERA_STATE_DIR or YMERA_DATABASE_URL)", {"field": "database_url"})
    try:
        with contextlib.closing(sqlite3.connect(source, timeout=30)) as reader, \
                contextlib.closing(sqlite3.connect(target)) as copy:
            reader.backup(copy)  # all pages in one step: one read transaction, one snapshot
            copy.execute("PRAGMA journal_mode=DELETE")
            check = copy.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StorageError(f"the copy of {source} fails SQLite's check: {check}")
            return _sqlite_figures(copy, source)
    except sqlite3.Error as exc:
        raise StorageError(f"backing up {source} failed: {exc}") from exc


def _sqlite_figures(connection: sqlite3.Connection, source: Path) -> tuple[str, dict[str, int]]:
    try:
        revision = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.OperationalError:
        revision = None
    if revision is None:
        raise InvalidRequest(f"{source} holds no YMERA schema: run `ymera migrate` first",
                             {"field": "database_url"})
    rows = connection.execute(f"SELECT status, count(*) FROM {TASKS} GROUP BY status")
    return str(revision[0]), {str(status): int(n) for status, n in rows}


def _sqlite_tables(path: Path) -> int:
    """How many tables the SQLite file at `path` holds (0 when it is missing or empty)."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    try:
        with contextlib.closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as c:
            return int(c.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table'")
                       .fetchone()[0])
    except sqlite3.Error as exc:
        raise StorageError(f"cannot read the target database {path}: {exc}") from exc


def _restore_sqlite(data: Path, target: Path) -> None:
    """Replace the content of `target` with the backup's through SQLite's backup API (which
    takes the target's locks and journal into account: never a file copy under a WAL)."""
    private_sqlite_file(target)
    try:
        with contextlib.closing(sqlite3.connect(f"{data.as_uri()}?mode=ro", uri=True)) as copy, \
                contextlib.closing(sqlite3.connect(target, timeout=30)) as database:
            copy.backup(database)
    except sqlite3.Error as exc:
        raise StorageError(f"restoring into {target} failed: {exc}") from exc
    private_sqlite_file(target)  # its -wal and -shm, if SQLite made them


async def _describe(url: URL) -> tuple[str, dict[str, int]]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            revision = (await connection.execute(
                text("SELECT version_num FROM alembic_version"))).scalar_one()
            rows = await connection.execute(
                text(f"SELECT status, count(*) FROM {TASKS} GROUP BY status"))
            return str(revision), {str(status): int(n) for status, n in rows.all()}
    except DATABASE_FAILURES as exc:
        raise StorageError(f"reading the restored database failed: {exc}") from exc
    finally:
        await engine.dispose()


def _write_private(path: Path, content: str) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    with os.fdopen(descriptor, "w") as file:
        file.write(content)
        file.flush()
        os.fsync(file.fileno())


def _sync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
