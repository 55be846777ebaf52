"""The checker finds what it must on a real PostgreSQL database: an acknowledged task missing or
unfinished is lost, a key answered with two ids and a task with two outcomes are duplicates, gaps
in attempt numbers are a malformed log; a clean history passes with zeros."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from cluster.chaos.checker import check, wait_settled
from cluster.chaos.faults import Fault
from cluster.chaos.load import Ack, ClientError, LoadRecord
from storage.database import migrate
from tests.support.databases import database_url_fixture


@pytest.fixture
def dsn(tmp_path: Path) -> Iterator[str]:
    for url in database_url_fixture("postgresql", tmp_path):
        migrate(url)
        yield url


def _insert(dsn: str, tasks: list[tuple], events: list[tuple], attempts: list[tuple]) -> None:
    async def go() -> None:
        conn = await asyncpg.connect(dsn)
        try:
            for task_id, key, status, count, *agent_type in tasks:
                await conn.execute(
                    "insert into tasks (id, tenant, description, payload, agent_type, status, "
                    "priority, attempts, max_attempts, timeout_s, idempotency_key, created_at, "
                    "updated_at, finished_at, cpu_s, wall_s) values ($1, 'chaos-a', 'd', "
                    "'{}', $5, $2::varchar, 0, $3, 5, 30, $4, now(), now(), "
                    "case when $2::varchar = 'queued' then null else now() end, 0, 0)",
                    task_id, status, count, key, (agent_type or ["calculator"])[0])
            for task_id, kind, attempt in events:
                await conn.execute("insert into task_events (task_id, kind, at, attempt) "
                                   "values ($1, $2, now(), $3)", task_id, kind, attempt)
            for task_id, number in attempts:
                await conn.execute(
                    "insert into task_attempts (task_id, number, replica, outcome, started_at) "
                    "values ($1, $2, 'r', 'succeeded', now())", task_id, number)
        finally:
            await conn.close()

    asyncio.run(go())


def _ack(record: LoadRecord, key: str, task_id: str) -> None:
    record.acked(Ack("chaos-a", key, "task", "python", task_id, "calculator", 0.0, 1.0, 1))


def test_a_clean_history_passes(dsn: str) -> None:
    _insert(dsn, [("t1", "k1", "succeeded", 2)],
            [("t1", "queued", None), ("t1", "started", 1), ("t1", "attempt_lost", 1),
             ("t1", "started", 2), ("t1", "succeeded", 2)], [("t1", 1), ("t1", 2)])
    record = LoadRecord()
    _ack(record, "k1", "t1")
    record.failed(ClientError(0.0, "task", "PlatformUnavailable", "platform_unavailable", True,
                              "restarting"))
    assert wait_settled(dsn, record, settle_s=5) < 5
    report = check(dsn, record, [Fault("orchestrator_kill", 0.0, 0.0, "pid 1")], 0.0)
    assert (report["lost"], report["duplicated"], report["malformed_event_logs"]) == (0, 0, 0)
    assert report["faults_injected"] == {"orchestrator_kill": 1}
    assert report["operations"]["task_outcomes"] == {"succeeded": 1}
    assert report["undocumented_client_errors"] == 0


def test_lost_duplicated_and_malformed_are_found(dsn: str) -> None:
    _insert(dsn, [("t1", "k1", "queued", 0), ("t2", "k2", "succeeded", 1),
                  ("t3", "k3", "succeeded", 1), ("t4", "k4", "succeeded", 3)],
            [("t2", "succeeded", 1), ("t3", "succeeded", 1), ("t3", "failed", 1),
             ("t4", "succeeded", 3)],
            [("t2", 1), ("t3", 1), ("t4", 1), ("t4", 3)])
    record = LoadRecord()
    for key, task_id in (("k1", "t1"), ("k2", "t2"), ("k2", "t3"), ("k4", "t4"),
                         ("k5", "missing")):
        _ack(record, key, task_id)
    record.failed(ClientError(0.0, "task", "ConnectionResetError", None, False, "raw"))
    report = check(dsn, record, [], 0.0)
    assert {(x["id"], x["status"]) for x in report["lost_examples"]} == {
        ("t1", "queued"), ("missing", None)}
    assert report["duplicated"] == 2  # a client saw key k2 answered with t2 and t3; t3 has two outcomes
    assert {tuple(x.get("ids", [x.get("id")])) for x in report["duplicated_examples"]} == {
        ("t2", "t3"), ("t3",)}
    assert {x["id"] for x in report["malformed_examples"]} == {"t3", "t4"}
    assert report["undocumented_client_errors"] == 1


def test_a_node_removal_recovers_at_the_next_success_of_a_pool_it_hosted(dsn: str) -> None:
    fault_at = time.time() - 1
    _insert(dsn, [("t1", "k1", "succeeded", 1, "calculator")],
            [("t1", "succeeded", 1)], [("t1", 1)])
    time.sleep(0.5)
    _insert(dsn, [("t2", "k2", "succeeded", 1, "data_processor")],
            [("t2", "succeeded", 1)], [("t2", 1)])
    record = LoadRecord()
    _ack(record, "k1", "t1")
    _ack(record, "k2", "t2")
    faults = [Fault("agent_replica_kill", fault_at, fault_at, "agent:calculator:1"),
              Fault("worker_node_removal", fault_at, fault_at, "node :1",
                    pools=["data_processor"])]
    report = check(dsn, record, faults, fault_at)
    by_kind = report["worst_recovery_s_by_kind"]
    assert by_kind["worker_node_removal"] >= by_kind["agent_replica_kill"] + 0.4
