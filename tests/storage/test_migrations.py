"""The schema comes from the migrations alone, the models agree with it, URLs get their driver."""

from __future__ import annotations

import asyncio

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection

from storage.database import (
    _alembic_config, async_url, create_engine, head_revision, migrate_async,
)
from storage.errors import InvalidRequest, SchemaOutOfDate, StorageError
from storage.example_store import ExampleStore, NewExample
from storage.models import Base
from storage.messages import TaskStatus, new_task_id, utcnow
from storage.task_store import TaskStore, WriteBatch
from storage.workflow_store import WorkflowStore


def _schema(connection: Connection) -> dict[str, object]:
    inspector = inspect(connection)
    return {
        "revision": MigrationContext.configure(connection).get_current_revision(),
        "tables": {
            table: (
                [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
                sorted(i["name"] for i in inspector.get_indexes(table)),
            )
            for table in sorted(inspector.get_table_names())
        },
    }


def _model_differences(connection: Connection) -> list:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return compare_metadata(context, Base.metadata)


async def _run_sync(url: str, function):
    engine = create_engine(url)
    try:
        async with engine.connect() as connection:
            return await connection.run_sync(function)
    finally:
        await engine.dispose()


async def test_migrating_again_changes_nothing_and_keeps_the_data(database_url: str) -> None:
    store = await TaskStore.open(database_url)
    now = utcnow()
    row = {"id": new_task_id(), "tenant": "default", "description": "keep me",
           "payload": {"keep": 1}, "agent_type": None, "status": TaskStatus.QUEUED.value,
           "priority": 0, "attempts": 0, "max_attempts": 3, "timeout_s": 30.0,
           "created_at": now, "updated_at": now}
    await store.apply(WriteBatch(new_tasks=[row]))
    await store.close()
    before = await _run_sync(database_url, _schema)

    await migrate_async(database_url)

    assert await _run_sync(database_url, _schema) == before
    assert before["revision"] == head_revision()
    store = await TaskStore.open(database_url)
    try:
        assert (await store.get_task(row["id"])).payload == {"keep": 1}
    finally:
        await store.close()


def _upgrade(url: str, revision: str) -> None:
    command.upgrade(_alembic_config(async_url(url)), revision)


async def test_0005_gives_existing_tasks_and_attempts_no_cost(empty_database_url: str) -> None:
    await asyncio.to_thread(_upgrade, empty_database_url, "0004")
    task_id, now = new_task_id(), utcnow()
    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(
                "INSERT INTO tasks (id, tenant, description, payload, status, priority, attempts,"
                " max_attempts, timeout_s, created_at, updated_at)"
                " VALUES (:id, 'default', 'from before', '{}', 'succeeded', 0, 1, 3, 30.0,"
                " :now, :now)"), {"id": task_id, "now": now})
            await connection.execute(text(
                "INSERT INTO task_attempts (task_id, number, replica, outcome, started_at,"
                " finished_at, duration_s) VALUES (:id, 1, 'calculator-0', 'succeeded', :now,"
                " :now, 0.5)"), {"id": task_id, "now": now})
    finally:
        await engine.dispose()

    await migrate_async(empty_database_url)

    async with await TaskStore.open(empty_database_url) as store:
        task = await store.get_task(task_id)
        assert (task.description, task.cpu_s, task.wall_s) == ("from before", 0.0, 0.0)
        [attempt] = await store.attempts(task_id)
        assert (attempt.duration_s, attempt.cpu_s) == (0.5, None)


async def test_0007_gives_existing_routing_examples_to_the_default_tenant(
    empty_database_url: str,
) -> None:
    await asyncio.to_thread(_upgrade, empty_database_url, "0006")
    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(
                "INSERT INTO routing_examples (agent_type, text, source, task_id, created_at)"
                " VALUES ('validation', 'check the Zephyr invoice totals', 'feedback', NULL,"
                " :now)"), {"now": utcnow()})
    finally:
        await engine.dispose()

    await migrate_async(empty_database_url)

    async with await ExampleStore.open(empty_database_url) as examples:
        [kept] = await examples.all("default")
        assert (kept.tenant, kept.agent_type, kept.text, kept.source) == (
            "default", "validation", "check the Zephyr invoice totals", "feedback")
        assert await examples.all("acme") == []
        [added] = await examples.add([NewExample("calculator", "sum it", tenant="acme")])
        assert await examples.all("acme") == [added]


async def test_the_store_refuses_a_database_that_was_never_migrated(
    empty_database_url: str,
) -> None:
    with pytest.raises(SchemaOutOfDate) as raised:
        await TaskStore.open(empty_database_url)

    assert "ymera migrate" in str(raised.value)
    assert isinstance(raised.value, StorageError)
    assert raised.value.details == {"current": None, "head": head_revision()}


async def test_the_models_match_the_migrated_schema(database_url: str) -> None:
    assert await _run_sync(database_url, _model_differences) == []


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://ymera:s3cret@db.internal:5432/ymera",
         "postgresql+asyncpg://ymera:s3cret@db.internal:5432/ymera"),
        ("postgres://ymera@db.internal/ymera", "postgresql+asyncpg://ymera@db.internal/ymera"),
        ("postgresql+asyncpg://ymera@db.internal/ymera",
         "postgresql+asyncpg://ymera@db.internal/ymera"),
        ("sqlite:////var/lib/ymera/ymera.db", "sqlite+aiosqlite:////var/lib/ymera/ymera.db"),
        ("sqlite:///ymera.db", "sqlite+aiosqlite:///ymera.db"),
    ],
)
def test_async_url_gives_plain_urls_their_async_driver(url: str, expected: str) -> None:
    assert async_url(url).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    "url", ["mysql://ymera@db.internal/ymera", "postgresql+psycopg2://ymera@db.internal/ymera",
            "not a database url"],
)
def test_async_url_rejects_databases_it_does_not_support(url: str) -> None:
    with pytest.raises(InvalidRequest):
        async_url(url)


async def test_0008_keeps_users_and_makes_names_unique_per_tenant(
    empty_database_url: str,
) -> None:
    from storage.auth_store import AuthStore
    from storage.errors import Conflict

    await asyncio.to_thread(_upgrade, empty_database_url, "0007")
    now = utcnow()
    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(
                "INSERT INTO users (id, tenant, username, password_hash, role, disabled,"
                " created_at, updated_at) VALUES ('u1', 'acme', 'alice', 'h', 'admin', false,"
                " :now, :now)"), {"now": now})
    finally:
        await engine.dispose()

    await migrate_async(empty_database_url)

    async with await AuthStore.open(empty_database_url) as auth:
        assert (await auth.user_by_name("acme", "alice")).id == "u1"
        assert (await auth.create_user("globex", "alice", "h", "viewer")).tenant == "globex"
        with pytest.raises(Conflict):
            await auth.create_user("acme", "alice", "h", "viewer")


async def test_0009_leads_the_inbox_index_with_the_tenant(empty_database_url: str) -> None:
    def indexes(connection: Connection) -> dict[str, list[str]]:
        return {i["name"]: i["column_names"]
                for i in inspect(connection).get_indexes("agent_messages")}

    await asyncio.to_thread(_upgrade, empty_database_url, "0008")
    assert list(await _run_sync(empty_database_url, indexes)) == [
        "ix_agent_messages_recipient_acked_created"]

    await asyncio.to_thread(_upgrade, empty_database_url, "0009")

    assert await _run_sync(empty_database_url, indexes) == {
        "ix_agent_messages_tenant_recipient_acked_created": [
            "tenant", "recipient", "acked_at", "created_at"]}


async def test_0010_adds_workflow_tables_and_goes_down_again_keeping_tasks(
    empty_database_url: str,
) -> None:
    def tables(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    await asyncio.to_thread(_upgrade, empty_database_url, "0009")
    task_id = new_task_id()
    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(
                "INSERT INTO tasks (id, tenant, description, payload, status, priority, attempts,"
                " max_attempts, timeout_s, created_at, updated_at)"
                " VALUES (:id, 'default', 'from before', '{}', 'queued', 0, 0, 3, 30.0,"
                " :now, :now)"), {"id": task_id, "now": utcnow()})
    finally:
        await engine.dispose()
    before = await _run_sync(empty_database_url, tables)

    await asyncio.to_thread(_upgrade, empty_database_url, "0010")
    assert await _run_sync(empty_database_url, tables) == before | {
        "workflow_runs", "workflow_steps"}
    await asyncio.to_thread(
        command.downgrade, _alembic_config(async_url(empty_database_url)), "0009")

    assert await _run_sync(empty_database_url, tables) == before
    await migrate_async(empty_database_url)
    async with await TaskStore.open(empty_database_url) as store:
        assert (await store.get_task(task_id)).description == "from before"


async def test_0011_adds_run_events_and_generation_keeping_runs(empty_database_url: str) -> None:
    def shape(connection: Connection) -> tuple[set[str], set[str]]:
        inspector = inspect(connection)
        return (set(inspector.get_table_names()),
                {column["name"] for column in inspector.get_columns("workflow_runs")})

    await asyncio.to_thread(_upgrade, empty_database_url, "0010")
    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(
                "INSERT INTO workflow_runs (id, tenant, name, version, spec, status, created_at,"
                " updated_at) VALUES ('r1', 'default', 'old', '1', '{}', 'running', :now, :now)"),
                {"now": utcnow()})
    finally:
        await engine.dispose()

    await migrate_async(empty_database_url)
    tables, columns = await _run_sync(empty_database_url, shape)
    assert "workflow_events" in tables and "generation" in columns
    async with await WorkflowStore.open(empty_database_url) as store:
        run = await store.run("default", "r1")
        assert (run.name, run.generation) == ("old", 0)

    await asyncio.to_thread(
        command.downgrade, _alembic_config(async_url(empty_database_url)), "0010")
    tables, columns = await _run_sync(empty_database_url, shape)
    assert "workflow_events" not in tables and "generation" not in columns


async def test_0012_adds_llm_gateway_tables_and_goes_down_again_keeping_runs(
    empty_database_url: str,
) -> None:
    def tables(connection: Connection) -> set[str]:
        return set(inspect(connection).get_table_names())

    await asyncio.to_thread(_upgrade, empty_database_url, "0011")
    engine = create_engine(empty_database_url)
    try:
        async with engine.begin() as connection:
            await connection.execute(text(
                "INSERT INTO workflow_runs (id, tenant, name, version, spec, status, created_at,"
                " updated_at) VALUES ('r1', 'default', 'old', '1', '{}', 'running', :now, :now)"),
                {"now": utcnow()})
    finally:
        await engine.dispose()
    before = await _run_sync(empty_database_url, tables)

    await asyncio.to_thread(_upgrade, empty_database_url, "0012")
    assert await _run_sync(empty_database_url, tables) == before | {
        "llm_breakers", "llm_budgets", "llm_budget_periods", "llm_reservations", "llm_usage",
        "llm_cache"}
    await asyncio.to_thread(
        command.downgrade, _alembic_config(async_url(empty_database_url)), "0011")

    assert await _run_sync(empty_database_url, tables) == before
    await migrate_async(empty_database_url)
    async with await WorkflowStore.open(empty_database_url) as store:
        assert (await store.run("default", "r1")).name == "old"
