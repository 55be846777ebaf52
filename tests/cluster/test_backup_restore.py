"""Restore drills on SQLite and PostgreSQL: a backup taken while tasks are being submitted and
finishing restores into a fresh database, an orchestrator started on it finishes every task
of the backup exactly once, and nothing acknowledged after the backup is there (the recovery
point). A corrupt backup, a newer schema, the wrong engine and a non-empty target are refused
and change nothing; an older schema is migrated once restored."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from actors.config import PoolConfig
from cluster.backup import MANIFEST, Manifest, restore_backup, take_backup
from cluster.cli import main
from storage.database import MIGRATIONS, create_engine, head_revision, migrate_async
from storage.errors import Conflict, InvalidRequest
from storage.messages import TaskRequest, TaskStatus
from tests.support.databases import DATABASE_KINDS, database_url_fixture, require_service
from tests.support.inprocess_platform import inprocess_orchestrator

TERMINAL_KINDS = {s.value for s in TaskStatus if s.is_terminal}
TENANTS = ("acme", "globex")


@pytest.fixture(params=DATABASE_KINDS)
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A fresh, empty source database and a fresh, empty target of the same engine."""
    if request.param == "postgresql":
        require_service("pg_dump and pg_restore",
                        bool(shutil.which("pg_dump") and shutil.which("pg_restore")),
                        "PostgreSQL's client tools (pg_dump, pg_restore) are not on PATH")
    made = [database_url_fixture(request.param, tmp_path / name) for name in ("src", "dst")]
    for name in ("src", "dst"):
        (tmp_path / name).mkdir()
    urls = [next(fixture) for fixture in made]
    yield urls[0], urls[1]
    for fixture in made:
        next(fixture, None)  # removes the database


async def rows(url: str, query: str) -> list[tuple]:
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return [tuple(r) for r in (await connection.execute(text(query))).all()]
    finally:
        await engine.dispose()


async def table_count(url: str) -> int:
    if url.startswith("sqlite"):
        path = Path(url.removeprefix("sqlite:///"))
        if not path.exists():
            return 0
        with sqlite3.connect(path) as connection:
            return connection.execute(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'").fetchone()[0]
    return (await rows(url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))[0][0]


async def test_a_backup_under_load_restores_and_every_task_in_it_finishes_exactly_once(
    databases: tuple[str, str], tmp_path: Path,
) -> None:
    source, target = databases
    pools = {"sleeper": PoolConfig(replicas=1)}
    acknowledged: list[tuple[str, float]] = []  # (task id, when submit returned)
    submitted_at: dict[str, float] = {}  # task id -> when its submit was called
    tenant_of: dict[str, str] = {}
    loop = asyncio.get_running_loop()

    async with inprocess_orchestrator(tmp_path, database_url=source, pools=pools) as platform:
        stop = asyncio.Event()

        async def client() -> None:
            number = 0
            while not stop.is_set():
                called = loop.time()
                task_id = await platform.submit(TaskRequest(
                    f"drill {number}", {"seconds": 0.3}, agent_type="sleeper",
                    tenant=TENANTS[number % 2], idempotency_key=f"drill-{number}"))
                acknowledged.append((task_id, loop.time()))
                submitted_at[task_id] = called
                tenant_of[task_id] = TENANTS[number % 2]
                number += 1
                await asyncio.sleep(0.01)

        submitting = asyncio.create_task(client())
        while len(acknowledged) < 20:
            await asyncio.sleep(0.02)
        await platform.wait(acknowledged[0][0], 10)  # some have finished, many have not
        began = loop.time()
        manifest = await take_backup(source, tmp_path / "backup")
        ended = loop.time()
        await asyncio.sleep(0.3)  # the platform goes on: these are only in the next backup
        stop.set()
        await submitting

    before = {task_id for task_id, at in acknowledged if at < began}
    after = {task_id for task_id, called in submitted_at.items() if called > ended}
    assert before and after
    in_backup = sum(manifest.tasks_by_status.values())
    assert manifest.tasks_by_status.get("succeeded", 0) >= 1
    assert manifest.tasks_by_status.get("queued", 0) + manifest.tasks_by_status.get(
        "running", 0) >= 1, f"the drill needs unfinished tasks in the backup: {manifest}"

    restored = await restore_backup(tmp_path / "backup", target)
    assert restored.tasks_by_status == manifest.tasks_by_status
    assert restored.schema_revision == head_revision() and restored.migrated_from is None
    at_restore = dict(await rows(target, "SELECT id, status FROM tasks"))
    events_at_restore = dict(await rows(
        target, "SELECT task_id, count(*) FROM task_events GROUP BY task_id"))
    assert len(at_restore) == in_backup
    assert before <= at_restore.keys(), "a task acknowledged before the backup is missing"
    assert not after & at_restore.keys(), "a task acknowledged after the backup is in it"

    async with inprocess_orchestrator(tmp_path, database_url=target, pools=pools) as platform:
        finished = await platform.wait_many(sorted(at_restore), 60)
        events = {task_id: await platform.events(task_id) for task_id in at_restore}

    assert {t.status for t in finished} == {TaskStatus.SUCCEEDED}
    assert {t.id: t.tenant for t in finished} == {i: tenant_of[i] for i in at_restore}
    for task_id, task_events in events.items():
        terminal = [e for e in task_events if e.kind in TERMINAL_KINDS]
        assert len(terminal) == 1, f"{task_id} has {len(terminal)} terminal events"
        if at_restore[task_id] == "succeeded":  # finished in the backup: left as it was
            assert len(task_events) == events_at_restore[task_id]


async def test_a_corrupt_backup_is_refused_and_the_target_is_left_as_it_was(
    databases: tuple[str, str], tmp_path: Path,
) -> None:
    source, target = databases
    await migrate_async(source)
    manifest = await take_backup(source, tmp_path / "backup")
    data = tmp_path / "backup" / manifest.file
    content = bytearray(data.read_bytes())
    content[len(content) // 2] ^= 0xFF
    data.write_bytes(bytes(content))

    with pytest.raises(InvalidRequest, match="corrupt") as caught:
        await restore_backup(tmp_path / "backup", target, force=True)
    assert caught.value.details["expected_sha256"] == manifest.sha256
    assert await table_count(target) == 0


async def test_a_non_empty_target_is_refused_unless_forced_on_the_command_line(
    databases: tuple[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("YMERA_STATE_DIR", str(tmp_path / "state"))
    source, target = databases
    async with inprocess_orchestrator(tmp_path, database_url=source,
                                      pools={"sleeper": PoolConfig(replicas=1)}) as platform:
        kept = await platform.submit(TaskRequest("kept", {}, agent_type="sleeper",
                                                 tenant="acme"))
        await platform.wait(kept, 10)
    async with inprocess_orchestrator(tmp_path, database_url=target) as platform:
        theirs = await platform.submit(TaskRequest("theirs", {}, agent_type="sleeper",
                                                   tenant="acme"))
    backup = str(tmp_path / "backup")

    assert await asyncio.to_thread(main, ["backup", backup, "--database-url", source,
                                          "--json"]) == 0
    taken = json.loads(capsys.readouterr().out)
    assert taken["backup"] == backup and taken["tasks_by_status"] == {"succeeded": 1}
    assert (tmp_path / "backup").stat().st_mode & 0o777 == 0o700
    assert {p.stat().st_mode & 0o777 for p in (tmp_path / "backup").iterdir()} == {0o600}

    assert await asyncio.to_thread(main, ["restore", backup, "--database-url", target,
                                          "--json"]) == 1
    refused = json.loads(capsys.readouterr().out)["error"]
    assert refused["code"] == "conflict" and "--force" in refused["message"]
    assert await rows(target, "SELECT id FROM tasks") == [(theirs,)]

    assert await asyncio.to_thread(main, ["restore", backup, "--database-url", target,
                                          "--force", "--json"]) == 0
    restored = json.loads(capsys.readouterr().out)
    assert restored["tasks_by_status"] == {"succeeded": 1}
    assert await rows(target, "SELECT id, tenant, status FROM tasks") == [
        (kept, "acme", "succeeded")]


async def test_a_backup_of_a_newer_schema_or_another_engine_is_refused(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    await migrate_async(source)
    await take_backup(source, tmp_path / "backup")
    manifest_path = tmp_path / "backup" / MANIFEST
    original = json.loads(manifest_path.read_text())

    manifest_path.write_text(json.dumps({**original, "schema_revision": "9999"}))
    with pytest.raises(InvalidRequest, match="9999.*newer"):
        await restore_backup(tmp_path / "backup", target)
    manifest_path.write_text(json.dumps(original))
    with pytest.raises(InvalidRequest, match="sqlite backup"):
        await restore_backup(tmp_path / "backup", "postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(Conflict, match="already exists"):
        await take_backup(source, tmp_path / "backup")
    assert not (tmp_path / "dst.db").exists()
    assert Manifest.read(tmp_path / "backup").to_json() == original


async def test_a_backup_of_an_older_schema_is_migrated_once_restored(tmp_path: Path) -> None:
    source, target = f"sqlite:///{tmp_path / 'src.db'}", f"sqlite:///{tmp_path / 'dst.db'}"
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", source.replace("sqlite:", "sqlite+aiosqlite:"))
    await asyncio.to_thread(command.upgrade, config, "0010")
    manifest = await take_backup(source, tmp_path / "backup")
    assert manifest.schema_revision == "0010"

    restored = await restore_backup(tmp_path / "backup", target)

    assert restored.migrated_from == "0010" and restored.schema_revision == head_revision()
    assert (await rows(target, "SELECT version_num FROM alembic_version")) == [
        (head_revision(),)]
