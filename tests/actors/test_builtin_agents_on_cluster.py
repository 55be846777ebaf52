"""The built-in agents through the orchestrator on a real cluster: right answers, and input
errors that fail the task at once with the agent's own message."""

from __future__ import annotations

import pytest

from storage.messages import TaskRequest, TaskStatus

pytestmark = pytest.mark.cluster

ROWS = [{"region": "north", "sales": 120}, {"region": "south", "sales": 80},
        {"region": "north", "sales": 30}]


def run(client, description, payload, agent_type):
    return client.wait(client.submit(description, payload, agent_type=agent_type), 60)


def test_calculator_answers_from_payload_and_from_words(platform):
    assert run(platform, "x", {"expression": "sqrt(144) * 3"}, "calculator").result["value"] == 36
    assert run(platform, "What is 15% of 240?", {}, "calculator").result["value"] == 36
    stats = run(platform, "mean", {"operation": "mean", "numbers": [2, 4, 9]}, "calculator")
    assert stats.result["value"] == 5


@pytest.mark.parametrize("payload, message", [
    ({"expression": "(1 + 2"}, "parenthes"),
    ({"expression": "2 ** 99999999"}, "exponent"),
    ({"operation": "sum", "numbers": [1, "two"]}, "'numbers'[1] is a string"),
])
def test_calculator_input_errors_fail_once_with_a_clear_message(platform, payload, message):
    task = run(platform, "calc", payload, "calculator")
    assert task.status is TaskStatus.FAILED and task.attempts == 1
    assert task.error.code == "invalid_task_input"
    assert message in task.error.message.lower()


def test_data_processor_groups_and_joins(platform):
    grouped = run(platform, "total sales by region", {
        "operation": "group_by", "rows": ROWS, "by": "region",
        "aggregates": {"total": {"column": "sales", "fn": "sum"}}}, "data_processor")
    assert grouped.result["rows"] == [{"region": "north", "total": 150},
                                      {"region": "south", "total": 80}]
    csv = run(platform, "summary statistics", {"operation": "summary",
                                               "csv": "a,b\n1,x\n3,y\n"}, "data_processor")
    assert csv.result["columns"]["a"]["mean"] == 2


def test_data_processor_unknown_column_fails_clearly(platform):
    task = run(platform, "sort", {"operation": "sort", "rows": ROWS, "by": "price"},
               "data_processor")
    assert task.status is TaskStatus.FAILED
    assert "price" in task.error.message and "region" in task.error.message


def test_many_tasks_in_one_submission_all_complete(platform):
    ids = platform.submit_many([TaskRequest(f"{i} * 2", {"expression": f"{i} * 2"},
                                            "calculator") for i in range(300)])
    tasks = platform.wait_many(ids, 120)
    assert [t.result["value"] for t in tasks] == [i * 2 for i in range(300)]
