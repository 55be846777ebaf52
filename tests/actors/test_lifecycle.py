"""A task's life through the orchestrator on a real cluster: success, errors, retries, dead
letters, idempotency, cancellation, and bad input that changes nothing."""

from __future__ import annotations

import asyncio

import ray
import pytest

from actors.errors import QueueFull
from actors.orchestrator_api import ActorOrchestrator
from ml.errors import NoConfidentRoute
from storage.errors import Conflict, InvalidRequest, NotFound
from storage.messages import AttemptOutcome, TaskRequest, TaskStatus
from tests.support.platform import run_platform, wait_until

pytestmark = pytest.mark.cluster


def outcomes(client, task_id):
    return [a.outcome for a in client.attempts(task_id)]


def test_task_succeeds_and_its_history_is_recorded(any_platform):
    client = any_platform
    task_id = client.submit("what is 2^10 + 5", {"expression": "2^10 + 5"},
                            agent_type="calculator")
    task = client.wait(task_id, 60)
    assert task.status is TaskStatus.SUCCEEDED
    assert task.result["value"] == 1029
    assert task.route["agent_type"] == "calculator"
    assert outcomes(client, task_id) == [AttemptOutcome.SUCCEEDED]
    kinds = [e.kind for e in client.events(task_id)]
    assert kinds == ["queued", "started", "succeeded"]


def test_run_submits_and_waits_in_one_call_and_a_retried_run_submits_once(any_platform):
    client = any_platform
    task = client.run("what is 2^10 + 5", {"expression": "2^10 + 5"}, agent_type="calculator",
                      wait_s=60)
    assert task.status is TaskStatus.SUCCEEDED and task.result["value"] == 1029
    # "started" commits with the outcome when the attempt is quick; the history is whole
    assert [e.kind for e in client.events(task.id)] == ["queued", "started", "succeeded"]
    assert outcomes(client, task.id) == [AttemptOutcome.SUCCEEDED]
    again = client.run("what is 2^10 + 5", {"expression": "2^10 + 5"}, agent_type="calculator",
                       idempotency_key=task.idempotency_key, wait_s=60)
    assert again.id == task.id and len(client.attempts(task.id)) == 1
    unfinished = client.run("sleeps", {"seconds": 2}, agent_type="sleeper", wait_s=0.2)
    assert unfinished.status in (TaskStatus.QUEUED, TaskStatus.RUNNING)
    assert client.wait(unfinished.id, 60).status is TaskStatus.SUCCEEDED


def test_submissions_sent_together_each_get_their_own_outcome(platform):
    client = platform
    outcomes = ray.get(client.orchestrator.accept_each.remote([
        TaskRequest("3 * 7", {"expression": "3 * 7"}, "calculator"),
        TaskRequest("no such type", {}, "no_such_agent"),
        TaskRequest("4 * 5", {"expression": "4 * 5"}, "calculator")]))
    assert isinstance(outcomes[1], InvalidRequest) and "no_such_agent" in str(outcomes[1])
    done = client.wait_many([outcomes[0].id, outcomes[2].id], 60)
    assert [t.result["value"] for t in done] == [21, 20]
    # over the actor port, concurrent submissions share calls and keep their own answers
    port = ActorOrchestrator(client.orchestrator)

    async def submit_together():
        return await asyncio.gather(*(
            port.accept(TaskRequest(f"{i} + 1", {"expression": f"{i} + 1"}, "calculator"))
            for i in range(12)), port.accept(TaskRequest("x", {}, "no_such_agent")),
            return_exceptions=True)

    *tasks, refused = asyncio.run(submit_together())
    assert isinstance(refused, InvalidRequest)
    assert [t.result["value"] for t in client.wait_many([t.id for t in tasks], 60)] == \
        [i + 1 for i in range(12)]
    assert port.coalescer.calls_sent < 13  # they did share calls


def test_bad_input_is_rejected_and_stores_nothing(platform):
    client = platform
    before = client.status()["tasks"]
    with pytest.raises(InvalidRequest, match="unknown agent_type 'nope'"):
        client.submit("x", {}, agent_type="nope")
    with pytest.raises(InvalidRequest, match="description must be a non-empty string"):
        client.submit("   ", {}, agent_type="calculator")
    with pytest.raises(InvalidRequest, match="payload is .* bytes; the limit is"):
        client.submit("big", {"blob": "x" * 2_000_000}, agent_type="calculator")
    with pytest.raises(InvalidRequest, match="timeout_s must be"):
        client.submit("x", {}, agent_type="calculator", timeout_s=-1)
    with pytest.raises(NoConfidentRoute, match="names no agent_type"):
        client.submit("what is 1+1", {})
    good = TaskRequest("1+1", {"expression": "1+1"}, "calculator")
    bad = TaskRequest("1+1", "not an object", "calculator")
    with pytest.raises(InvalidRequest, match="task 1: payload must be a JSON object"):
        client.submit_many([good, bad, good])
    assert client.status()["tasks"] == before


def test_agent_input_error_fails_at_once_with_the_agents_message(platform):
    client = platform
    task = client.wait(client.submit("bad", {"bad": True}, agent_type="flaky"), 60)
    assert task.status is TaskStatus.FAILED
    assert task.error.code == "invalid_task_input"
    assert "bad on purpose" in task.error.message
    assert outcomes(client, task.id) == [AttemptOutcome.FAILED]


def test_retryable_errors_are_retried_until_success(platform):
    client = platform
    task = client.wait(client.submit("flaky", {"succeed_on": 3}, agent_type="flaky"), 60)
    assert task.status is TaskStatus.SUCCEEDED
    assert task.result == {"attempt": 3}
    assert outcomes(client, task.id) == [AttemptOutcome.ERROR, AttemptOutcome.ERROR,
                                         AttemptOutcome.SUCCEEDED]
    kinds = [e.kind for e in client.events(task.id)]
    assert kinds.count("retry_scheduled") == 2


def test_exhausted_retries_dead_letter_the_task_and_requeue_revives_it(platform):
    client = platform
    task_id = client.submit("flaky", {"succeed_on": 5}, agent_type="flaky", max_attempts=2)
    task = client.wait(task_id, 60)
    assert task.status is TaskStatus.DEAD
    assert "transient failure on attempt 2" in task.error.message
    assert task_id in [t.id for t in client.dead(limit=1000).tasks]
    history = client.attempts(task_id)
    assert [a.number for a in history] == [1, 2]
    assert all(a.error and a.finished_at for a in history)

    client.requeue(task_id)
    task = client.wait(task_id, 60)
    # the budget is renewed (3 more attempts); attempt 5 succeeds
    assert task.status is TaskStatus.SUCCEEDED
    assert [a.number for a in client.attempts(task_id)] == [1, 2, 3, 4, 5]
    with pytest.raises(Conflict, match="only dead tasks can be requeued"):
        client.requeue(task_id)


def test_same_idempotency_key_gives_one_task_and_one_execution(platform):
    client = platform
    payload = {"seconds": 0.2}
    first = client.submit("once", payload, agent_type="sleeper", idempotency_key="order-42")
    refs = [client.orchestrator.submit.remote(
        TaskRequest("once", payload, "sleeper", idempotency_key="order-42")) for _ in range(5)]
    assert set(ray.get(refs)) == {first}
    client.wait(first, 60)
    again = client.submit("once", payload, agent_type="sleeper", idempotency_key="order-42")
    assert again == first
    assert len(client.attempts(first)) == 1
    assert [e.kind for e in client.events(first)].count("started") == 1
    other_tenant = client.submit("once", payload, agent_type="sleeper",
                                 idempotency_key="order-42", tenant="acme")
    assert other_tenant != first


def test_cancel_queued_and_running_tasks(platform):
    client = platform
    running = client.submit("long", {"seconds": 30}, agent_type="sleeper")
    wait_until(lambda: client.get(running).status is TaskStatus.RUNNING, what="running")
    task = client.cancel(running)
    assert task.status is TaskStatus.CANCELLED
    assert outcomes(client, running) == [AttemptOutcome.CANCELLED]
    with pytest.raises(Conflict, match="already cancelled"):
        client.cancel(running)
    with pytest.raises(NotFound):
        client.cancel("0" * 32)


def test_list_filters_and_pages_through_every_task(platform):
    client = platform
    ids = client.submit_many([TaskRequest(f"{i}+1", {"expression": f"{i}+1"}, "calculator",
                                          batch_id="page-test") for i in range(12)])
    client.wait_many(ids, 60)
    seen, cursor = [], None
    while True:
        page = client.list(batch_id="page-test", limit=5, cursor=cursor)
        seen += [t.id for t in page.tasks]
        cursor = page.next_cursor
        if cursor is None:
            break
    assert sorted(seen) == sorted(ids)
    with pytest.raises(InvalidRequest, match="unknown status"):
        client.list(status="sleeping")


def test_a_full_queue_rejects_clearly_and_loses_nothing_accepted(ray_cluster, tmp_path):
    from actors.config import PoolConfig

    for client in run_platform("postgresql", tmp_path, queue_max=5,
                               pools={"sleeper": PoolConfig(replicas=1, concurrency=1)}):
        accepted, rejected = [], 0
        for i in range(12):
            try:
                accepted.append(client.submit(f"t{i}", {"seconds": 0.3}, agent_type="sleeper"))
            except QueueFull as exc:
                rejected += 1
                assert "queue is full" in exc.message and exc.retry_after_s > 0
        assert rejected > 0 and len(accepted) >= 5
        tasks = client.wait_many(accepted, 120)
        assert [t.status for t in tasks] == [TaskStatus.SUCCEEDED] * len(accepted)
        assert client.status()["tasks"] == {"succeeded": len(accepted)}
