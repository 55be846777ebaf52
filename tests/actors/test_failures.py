"""Failures the platform must survive on a real cluster: an agent process killed with -9, the
orchestrator killed with queued and running work, and an agent that hangs."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest
import ray

from storage.messages import AttemptOutcome, TaskRequest, TaskStatus
from tests.support.platform import wait_until

pytestmark = pytest.mark.cluster


def pool(client, agent_type):
    return next(p for p in client.status()["pools"] if p["agent_type"] == agent_type)


def test_agent_killed_mid_task_costs_an_attempt_not_the_task(platform):
    client = platform
    before = {r["name"] for r in pool(client, "sleeper")["replicas"]}
    task_id = client.submit("slow", {"seconds": 3}, agent_type="sleeper")
    wait_until(lambda: client.get(task_id).status is TaskStatus.RUNNING, what="running")
    victim = client.attempts(task_id)[0].replica
    pid = wait_until(lambda: ray.get(client.orchestrator.replica_pids.remote()).get(victim),
                     what="replica pid")
    os.kill(pid, signal.SIGKILL)

    task = client.wait(task_id, 60)
    assert task.status is TaskStatus.SUCCEEDED
    history = client.attempts(task_id)
    assert [a.outcome for a in history] == [AttemptOutcome.LOST, AttemptOutcome.SUCCEEDED]
    assert history[0].replica == victim and history[1].replica != victim
    assert task.result["pid"] != pid

    def back_to_strength():
        p = pool(client, "sleeper")
        names = {r["name"] for r in p["replicas"] if r["ready"]}
        return p["live"] == p["desired"] and victim not in names and names != before
    wait_until(back_to_strength, 30, what="the pool to replace the killed replica")
    assert pool(client, "sleeper")["restarts"] >= 1


def test_orchestrator_killed_with_work_in_flight_loses_nothing_and_records_once(platform):
    client = platform
    ids = client.submit_many([
        TaskRequest(f"sleep {i}", {"seconds": 0.5, "echo": i}, "sleeper") for i in range(60)])
    wait_until(lambda: client.status()["running"] > 0, what="tasks running")
    old_pid = ray.get(client.orchestrator.pid.remote())
    os.kill(old_pid, signal.SIGKILL)

    tasks = client.wait_many(ids, 120)  # served by the restarted orchestrator
    assert ray.get(client.orchestrator.pid.remote()) != old_pid
    assert [t.status for t in tasks] == [TaskStatus.SUCCEEDED] * len(ids)
    assert sorted(t.result["echo"] for t in tasks) == list(range(60))
    for task_id in ids:
        events = Counter(e.kind for e in client.events(task_id))
        assert events["succeeded"] == 1, events
        succeeded = [a for a in client.attempts(task_id) if a.outcome is AttemptOutcome.SUCCEEDED]
        assert len(succeeded) == 1
        assert not [a for a in client.attempts(task_id) if a.outcome is AttemptOutcome.RUNNING]


def test_hung_agent_times_out_is_replaced_and_dead_letters_then_requeue_succeeds(
        platform, tmp_path):
    client = platform
    flag = tmp_path / "healthy"
    restarts_before = pool(client, "hanger")["restarts"]
    task_id = client.submit("hang", {"healthy_flag": str(flag), "hang_s": 30},
                            agent_type="hanger", timeout_s=1.0, max_attempts=2)
    task = client.wait(task_id, 90)
    assert task.status is TaskStatus.DEAD
    history = client.attempts(task_id)
    assert len(history) == 2
    assert {a.outcome for a in history} <= {AttemptOutcome.TIMEOUT, AttemptOutcome.LOST}
    assert all(a.error is not None and a.finished_at for a in history)
    assert task_id in [t.id for t in client.dead(limit=1000).tasks]
    wait_until(lambda: pool(client, "hanger")["restarts"] > restarts_before, 30,
               what="the hung replica to be replaced")

    flag.write_text("ok")
    wait_until(lambda: pool(client, "hanger")["live"] == 2, 60, what="the pool to recover")
    client.requeue(task_id)
    task = client.wait(task_id, 60)
    assert task.status is TaskStatus.SUCCEEDED
    assert task.result == {"healthy": True, "attempt": 3}
