"""The workflow engine inside the orchestrator, without a cluster: the same classes, an
in-process backend and a real SQLite database. Steps are real tasks run by the test agents
(`sleeper` answers `{"echo": ...}`, `flaky` fails on cue). The crash tests on a real cluster
and PostgreSQL are in test_workflow_failures_on_cluster.py."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from actors.config import PoolConfig
from storage.errors import Conflict, InvalidRequest, NotFound
from storage.messages import TaskStatus
from storage.workflow_records import RunDetail
from tests.support.inprocess_platform import inprocess_orchestrator, restarted, vanish

POOLS = {"sleeper": PoolConfig(replicas=2, concurrency=8),
         "flaky": PoolConfig(replicas=1, concurrency=8)}


@pytest.fixture
async def orchestrator(tmp_path):
    async with inprocess_orchestrator(tmp_path, pools=POOLS) as running:
        yield running


def echo(step_id: str, value: Any, **fields: Any) -> dict[str, Any]:
    return {"id": step_id, "agent_type": "sleeper", "payload": {"echo": value}, **fields}


def statuses(detail: RunDetail) -> dict[str, str]:
    return {s.step_id if s.map_index < 0 else f"{s.step_id}[{s.map_index}]": s.status.value
            for s in detail.steps}


async def test_a_chain_feeds_each_output_into_the_next_step(orchestrator):
    document = {"name": "chain", "steps": [
        echo("a", "${ input.start }"),
        echo("b", "${ steps.a.output.echo }", depends_on=["a"]),
        echo("c", "${ [steps.b.output.echo, input.start] }", depends_on=["b"]),
    ]}
    detail = await orchestrator.submit_workflow(document, {"start": 7}, wait_s=30)
    assert detail.run.status.value == "succeeded", detail.run.error
    outputs = {s.step_id: s.output["echo"] for s in detail.steps}
    assert outputs == {"a": 7, "b": 7, "c": [7, 7]}
    for step in detail.steps:  # each step is a task of the store, linked and keyed
        task = await orchestrator.get(step.task_id)
        assert task.status is TaskStatus.SUCCEEDED and task.agent_type == "sleeper"
    kinds = [e.kind for e in await orchestrator.run_events(detail.run.id)]
    assert kinds[0] == "run_created" and kinds[-1] == "run_succeeded"
    assert kinds.count("step_running") == 3 and kinds.count("step_succeeded") == 3


async def test_fan_out_then_fan_in_keeps_item_order_within_parallelism(orchestrator):
    document = {"name": "fan", "steps": [
        echo("items", "${ input.values }"),
        {"id": "each", "agent_type": "sleeper", "depends_on": ["items"],
         "payload": {"echo": "${ item }", "seconds": 0.02},
         "map_over": {"over": "steps.items.output.echo", "max_width": 100, "parallelism": 4}},
        echo("all", "${ steps.each.output[*].echo }", depends_on=["each"]),
    ]}
    values = list(range(30))
    detail = await orchestrator.submit_workflow(document, {"values": values}, wait_s=60)
    assert detail.run.status.value == "succeeded", detail.run.error
    final = next(s for s in detail.steps if s.step_id == "all")
    assert final.output["echo"] == values
    assert sum(1 for s in detail.steps if s.step_id == "each" and s.map_index >= 0) == 30
    # never more than `parallelism` items running: replay the events in order
    running, peak = set(), 0
    for event in await orchestrator.run_events(detail.run.id):
        if event.step_id == "each" and event.map_index is not None and event.map_index >= 0:
            if event.kind == "step_running":
                running.add(event.map_index)
            elif event.kind in ("step_succeeded", "step_failed"):
                running.discard(event.map_index)
            peak = max(peak, len(running))
    assert 1 <= peak <= 4


async def test_a_false_condition_skips_the_step_and_dependents_see_null(orchestrator):
    document = {"name": "cond", "steps": [
        echo("maybe", "ran", condition="input.go"),
        echo("after", "${ steps.maybe.output }", depends_on=["maybe"]),
    ]}
    detail = await orchestrator.submit_workflow(document, {"go": False}, wait_s=30)
    assert statuses(detail) == {"maybe": "skipped", "after": "succeeded"}
    assert next(s for s in detail.steps if s.step_id == "after").output["echo"] is None


async def test_an_approval_waits_for_a_person_then_the_run_goes_on(orchestrator):
    document = {"name": "approve", "steps": [
        {"id": "ok", "approval": {"timeout_s": 60}, "payload": {"question": "ship it?"}},
        echo("ship", "shipped", depends_on=["ok"]),
    ]}
    detail = await orchestrator.submit_workflow(document, {}, wait_s=0.5)
    assert detail.run.status.value == "waiting"
    assert statuses(detail) == {"ok": "awaiting_approval", "ship": "waiting"}
    with pytest.raises(Conflict, match="not awaiting approval"):
        await orchestrator.decide(detail.run.id, "ship", "approve", "user:ann")
    decided = await orchestrator.decide(detail.run.id, "ok", "approve", "user:ann", "fine")
    assert decided.steps[0].decided_by == "user:ann"
    done = await orchestrator.wait_run(detail.run.id, 30)
    assert done.run.status.value == "succeeded"
    with pytest.raises(Conflict):  # decided once
        await orchestrator.decide(detail.run.id, "ok", "reject", "user:bob")


async def test_an_undecided_approval_takes_its_timeout_outcome(orchestrator):
    document = {"name": "timeout", "steps": [
        {"id": "ok", "approval": {"timeout_s": 0.3, "on_timeout": "reject"}},
        echo("ship", "shipped", depends_on=["ok"]),
    ]}
    detail = await orchestrator.submit_workflow(document, {}, wait_s=10)
    assert detail.run.status.value == "failed"
    assert statuses(detail) == {"ok": "failed", "ship": "cancelled"}


async def test_a_durable_timer_waits_then_runs_what_follows(orchestrator):
    document = {"name": "timer", "steps": [
        {"id": "pause", "timer": {"wait_s": 0.4}},
        echo("after", "late", depends_on=["pause"]),
    ]}
    started = asyncio.get_running_loop().time()
    detail = await orchestrator.submit_workflow(document, {}, wait_s=10)
    assert detail.run.status.value == "succeeded"
    assert asyncio.get_running_loop().time() - started >= 0.4


async def test_a_failure_runs_compensation_in_reverse_and_fails_the_run(orchestrator):
    document = {"name": "saga", "steps": [
        echo("book", "booked", compensate="unbook"),
        echo("pay", "paid", depends_on=["book"], compensate="refund"),
        {"id": "ship", "agent_type": "flaky", "payload": {"bad": True}, "depends_on": ["pay"]},
        echo("unbook", "${ steps.book.output.echo }"),
        echo("refund", "${ steps.pay.output.echo }"),
    ]}
    detail = await orchestrator.submit_workflow(document, {}, wait_s=30)
    assert detail.run.status.value == "failed"
    assert "ship" in str(detail.run.error)
    assert statuses(detail)["refund"] == "succeeded" and statuses(detail)["unbook"] == "succeeded"
    steps = {s.step_id: s for s in detail.steps}
    assert steps["refund"].updated_at <= steps["unbook"].updated_at  # latest first


async def test_cancel_stops_the_running_step_and_what_waits(orchestrator):
    document = {"name": "slow", "steps": [
        {"id": "slow", "agent_type": "sleeper", "payload": {"seconds": 30}},
        echo("after", 1, depends_on=["slow"]),
    ]}
    detail = await orchestrator.submit_workflow(document, {})
    run_id = detail.run.id
    while statuses(await orchestrator.get_run(run_id))["slow"] != "running":
        await asyncio.sleep(0.02)
    cancelled = await orchestrator.cancel_run(run_id)
    assert cancelled.run.status.value == "cancelled"
    assert statuses(cancelled) == {"slow": "cancelled", "after": "cancelled"}
    task_id = next(s.task_id for s in cancelled.steps if s.step_id == "slow")
    assert (await orchestrator.wait(task_id, 15)).status is TaskStatus.CANCELLED
    with pytest.raises(Conflict, match="already cancelled"):
        await orchestrator.cancel_run(run_id)


async def test_retry_from_a_step_reruns_it_and_its_dependents_keeping_the_rest(orchestrator):
    document = {"name": "retry", "steps": [
        echo("first", 1),
        {"id": "shaky", "agent_type": "flaky", "depends_on": ["first"],
         "payload": {"bad": "${ input.bad }"}},
        echo("last", "${ steps.shaky.output.attempt }", depends_on=["shaky"]),
    ]}
    detail = await orchestrator.submit_workflow(document, {"bad": True}, wait_s=30)
    assert statuses(detail) == {"first": "succeeded", "shaky": "failed", "last": "cancelled"}
    first_task = next(s.task_id for s in detail.steps if s.step_id == "first")
    with pytest.raises(NotFound):
        await orchestrator.retry_run(detail.run.id, "nope")
    # the input is kept; the agent fails the same way, so retry into a fresh failure...
    retried = await orchestrator.retry_run(detail.run.id, "shaky")
    assert retried.run.generation == 1
    again = await orchestrator.wait_run(detail.run.id, 30)
    assert statuses(again) == {"first": "succeeded", "shaky": "failed", "last": "cancelled"}
    shaky = [s.task_id for s in again.steps if s.step_id == "shaky"]
    old_shaky = [s.task_id for s in detail.steps if s.step_id == "shaky"]
    assert shaky != old_shaky  # a new task, not the old failed one returned by its key
    assert next(s.task_id for s in again.steps if s.step_id == "first") == first_task
    with pytest.raises(Conflict):  # a running/succeeded run cannot be retried
        ok = await orchestrator.submit_workflow({"name": "ok", "steps": [echo("a", 1)]}, {},
                                                wait_s=30)
        await orchestrator.retry_run(ok.run.id, "a")


async def test_the_same_idempotency_key_gives_the_same_run(orchestrator):
    document = {"name": "once", "steps": [echo("a", "${ input.n }")]}
    one = await orchestrator.submit_workflow(document, {"n": 1}, idempotency_key="k1",
                                             wait_s=30)
    two = await orchestrator.submit_workflow(document, {"n": 2}, idempotency_key="k1")
    assert two.run.id == one.run.id and two.steps[0].output["echo"] == 1
    other = await orchestrator.submit_workflow(document, {"n": 3}, idempotency_key="k1",
                                               tenant="globex")
    assert other.run.id != one.run.id  # keys are per tenant
    with pytest.raises(NotFound):
        await orchestrator.get_run(one.run.id, tenant="globex")
    with pytest.raises(NotFound):
        await orchestrator.run_events(one.run.id, tenant="globex")


@pytest.mark.parametrize("document, step, field", [
    ({"name": "cycle", "steps": [echo("a", 1, depends_on=["b"]), echo("b", 1, depends_on=["a"])]},
     None, None),
    ({"name": "unknown", "steps": [{"id": "a", "agent_type": "nobody", "payload": {}}]},
     "a", "agent_type"),
    ({"name": "ref", "steps": [echo("a", "${ steps.zzz.output }")]}, "a", None),
    ({"name": "wide", "steps": [echo("a", 1), {
        "id": "m", "agent_type": "sleeper", "depends_on": ["a"], "payload": {},
        "map_over": {"over": "steps.a.output", "max_width": 100_000}}]}, "m", None),
])
async def test_a_bad_workflow_is_refused_naming_the_step_and_nothing_is_stored(
        orchestrator, document, step, field):
    with pytest.raises(InvalidRequest) as info:
        await orchestrator.submit_workflow(document, {})
    if step is not None:
        assert step in str(info.value) or info.value.details.get("step") == step
    if field is not None:
        assert field in str(info.value) or field in str(info.value.details)
    assert (await orchestrator.list_runs()).runs == ()


async def test_a_restart_mid_run_resumes_without_repeating_a_step(tmp_path):
    document = {"name": "resume", "steps": [
        echo("a", 1),
        {"id": "b", "agent_type": "sleeper", "depends_on": ["a"],
         "payload": {"seconds": 0.5, "echo": 2}},
        echo("c", "${ steps.b.output.echo }", depends_on=["b"]),
    ]}
    async with inprocess_orchestrator(tmp_path, pools=POOLS) as first:
        detail = await first.submit_workflow(document, {})
        run_id = detail.run.id
        while statuses(await first.get_run(run_id))["b"] != "running":
            await asyncio.sleep(0.02)
        a_task = next(s.task_id for s in (await first.get_run(run_id)).steps if s.step_id == "a")
        reborn = await restarted(first)
        try:
            done = await reborn.wait_run(run_id, 30)
            assert done.run.status.value == "succeeded"
            assert next(s.task_id for s in done.steps if s.step_id == "a") == a_task
            assert next(s.output for s in done.steps if s.step_id == "c")["echo"] == 2
            page = await reborn.list_tasks(limit=100)
            assert len(page.tasks) == 3  # one task per step: none repeated, none lost
        finally:
            await reborn.drain(5)
            await vanish(reborn)


async def test_a_run_past_its_deadline_fails_and_its_steps_are_cancelled(orchestrator):
    document = {"name": "late", "limits": {"max_run_duration_s": 0.5}, "steps": [
        {"id": "slow", "agent_type": "sleeper", "payload": {"seconds": 20}}]}
    detail = await orchestrator.submit_workflow(document, {}, wait_s=10)
    assert detail.run.status.value == "failed"
    assert detail.run.error["code"] == "run_deadline"
    assert statuses(detail) == {"slow": "cancelled"}


async def test_a_fan_out_wider_than_the_queue_waits_for_room_and_completes(tmp_path):
    document = {"name": "crowd", "steps": [
        {"id": "each", "agent_type": "sleeper", "payload": {"echo": "${ item }"},
         "map_over": {"over": "input.items", "max_width": 50, "parallelism": 16}},
    ]}
    async with inprocess_orchestrator(tmp_path, pools=POOLS, queue_max=3) as orchestrator:
        detail = await orchestrator.submit_workflow(document, {"items": list(range(12))},
                                                    wait_s=60)
        assert detail.run.status.value == "succeeded", detail.run.error
        assert [s.output["echo"] for s in detail.steps if s.map_index >= 0] == list(range(12))


async def test_a_step_whose_task_admission_refuses_fails_naming_why(orchestrator):
    document = {"name": "refused", "steps": [
        {"id": "twice", "agent_type": "sleeper",
         "payload": {"a": "${ input.blob }", "b": "${ input.blob }"}}]}
    detail = await orchestrator.submit_workflow(document, {"blob": "x" * 600_000}, wait_s=30)
    assert detail.run.status.value == "failed"  # the input fits; the step's payload does not
    step = detail.steps[0]
    assert step.status.value == "failed" and step.task_id is None
    assert step.error["code"] == "invalid_request" and "bytes" in step.error["message"]
    with pytest.raises(InvalidRequest, match="workflow input is"):
        await orchestrator.submit_workflow(document, {"blob": "x" * 1_100_000})


async def test_an_output_over_the_reference_limit_fails_its_step(orchestrator):
    document = {"name": "big", "steps": [echo("loud", "${ input.blob }")]}
    detail = await orchestrator.submit_workflow(document, {"blob": "x" * 300_000}, wait_s=30)
    assert detail.run.status.value == "failed"
    assert "max_output_bytes" in detail.steps[0].error["message"]


async def test_a_runs_events_read_in_cause_and_effect_order(orchestrator):
    document = {"name": "order", "steps": [
        echo("x", 1), echo("y", 2),  # stored (and planned) after the step they feed
        echo("a_last", 3, depends_on=["x", "y"]),
    ]}
    detail = await orchestrator.submit_workflow(document, {}, wait_s=30)
    assert detail.run.status.value == "succeeded"
    seen: list[tuple[str, str]] = [(e.kind, e.step_id) for e in
                                   await orchestrator.run_events(detail.run.id) if e.step_id]
    started = seen.index(("step_running", "a_last"))
    assert ("step_succeeded", "x") in seen[:started] and ("step_succeeded", "y") in seen[:started]
