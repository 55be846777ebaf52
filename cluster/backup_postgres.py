"""PostgreSQL's side of `cluster.backup`: `pg_dump` and `pg_restore`, run as the server's own
tools (never imitated: without them on PATH this says so and does nothing).

Guarantees: a dump is taken in the repeatable-read snapshot that the schema revision and the
task counts are read in (`pg_dump --snapshot`), so those figures describe the dump exactly;
the password never appears on a command line (it goes through `PGPASSWORD`); a restore runs in
one transaction and stops at the first error (`--single-transaction --exit-on-error`), so a
failed restore leaves the target as it was; ownership and grants of the source are not
carried over (`--no-owner --no-privileges`): the target's user owns what is restored.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import URL

from storage.database import DATABASE_FAILURES, create_engine
from storage.errors import InvalidRequest, StorageError
from storage.models import TASKS

CONNECT_TIMEOUT_S = "10"


def tool(name: str) -> str:
    """The path of PostgreSQL's client tool `name`, or a clear error naming it."""
    path = shutil.which(name)
    if path is None:
        raise StorageError(
            f"{name} is not on PATH: PostgreSQL backups and restores use PostgreSQL's own "
            f"client tools (install them, e.g. `apt install postgresql-client`, in a version "
            f"at least the server's)", {"tool": name})
    return path


def libpq_target(url: URL) -> tuple[str, dict[str, str]]:
    """The libpq connection URI of `url` (no password) and the environment carrying the
    password, for `pg_dump` and `pg_restore`."""
    plain = url.set(drivername="postgresql", password=None)
    env = {**os.environ, "PGCONNECT_TIMEOUT": CONNECT_TIMEOUT_S}
    if url.password is not None:
        env["PGPASSWORD"] = str(url.password)
    return plain.render_as_string(hide_password=False), env


async def dump(url: URL, target: Path) -> tuple[str, dict[str, int], str]:
    """Dump the database at `url` into `target` (custom format); return its schema revision,
    tasks by status and the pg_dump version, all of the one snapshot dumped."""
    pg_dump = tool("pg_dump")
    version = await _run([pg_dump, "--version"], dict(os.environ), "pg_dump --version")
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            connection = await connection.execution_options(isolation_level="REPEATABLE READ")
            async with connection.begin():
                snapshot = (await connection.execute(
                    text("SELECT pg_export_snapshot()"))).scalar_one()
                has_schema = (await connection.execute(
                    text("SELECT to_regclass('alembic_version') IS NOT NULL"))).scalar_one()
                if not has_schema:
                    raise InvalidRequest(f"{_shown(url)} holds no YMERA schema: run "
                                         "`ymera migrate` first", {"field": "database_url"})
                revision = (await connection.execute(
                    text("SELECT version_num FROM alembic_version"))).scalar_one()
                rows = (await connection.execute(
                    text(f"SELECT status, count(*) FROM {TASKS} GROUP BY status"))).all()
                uri, env = libpq_target(url)
                await _run([pg_dump, "--format=custom", "--no-owner", "--no-privileges",
                            f"--snapshot={snapshot}", f"--file={target}", f"--dbname={uri}"],
                           env, f"pg_dump of {_shown(url)}")
    except DATABASE_FAILURES as exc:
        raise StorageError(f"backing up {_shown(url)} failed: {exc}") from exc
    finally:
        await engine.dispose()
    return str(revision), {str(s): int(n) for s, n in rows}, version.strip()


async def table_count(url: URL) -> int:
    """How many tables the database at `url` holds outside PostgreSQL's own schemas."""
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return int((await connection.execute(text(
                "SELECT count(*) FROM pg_tables "
                "WHERE schemaname NOT IN ('pg_catalog', 'information_schema')"))).scalar_one())
    except DATABASE_FAILURES as exc:
        raise StorageError(f"cannot reach the target database {_shown(url)}: {exc}") from exc
    finally:
        await engine.dispose()


async def restore(url: URL, dump_file: Path, clean: bool) -> None:
    """`pg_restore` the dump into the database at `url`, in one transaction; `clean` drops
    the dump's objects first (what `--force` replaces)."""
    pg_restore = tool("pg_restore")
    uri, env = libpq_target(url)
    command = [pg_restore, "--no-owner", "--no-privileges", "--exit-on-error",
               "--single-transaction", f"--dbname={uri}"]
    if clean:
        command += ["--clean", "--if-exists"]
    await _run([*command, str(dump_file)], env, f"pg_restore into {_shown(url)}")


async def _run(command: list[str], env: dict[str, str], doing: str) -> str:
    process = await asyncio.create_subprocess_exec(
        *command, env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await process.communicate()
    if process.returncode != 0:
        reason = err.decode(errors="replace").strip() or f"exit status {process.returncode}"
        raise StorageError(f"{doing} failed: {reason}", {"exit_status": process.returncode})
    return out.decode(errors="replace")


def _shown(url: URL) -> str:
    return url.set(drivername="postgresql").render_as_string(hide_password=True)
