"""Workflow runs and steps are stored durably, per tenant, and change only by the rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select

from storage.errors import Conflict, InvalidRequest, NotFound
from storage.messages import utcnow
from storage.models import workflow_steps_table
from storage.workflow_store import (
    Decision, NewStep, RunStatus, StepChange, StepStatus, WorkflowStore,
)

SPEC = {"name": "report", "version": "1", "steps": [{"id": "aggregate"}, {"id": "total"}]}
STEPS = [NewStep("aggregate", status=StepStatus.READY), NewStep("total")]


@pytest.fixture
async def workflows(database_url: str) -> AsyncIterator[WorkflowStore]:
    async with await WorkflowStore.open(database_url) as store:
        yield store


async def _create(store: WorkflowStore, tenant: str = "acme", key: str | None = None,
                  steps: list[NewStep] = STEPS):
    run, created = await store.create_run(tenant, "report", "1", SPEC, {"month": "2026-11"},
                                          idempotency_key=key, steps=steps)
    assert created
    return run


async def test_a_created_run_keeps_its_spec_input_and_initial_steps(
    workflows: WorkflowStore,
) -> None:
    run = await _create(workflows)

    stored = await workflows.run("acme", run.id)
    assert stored == run
    assert (stored.spec, stored.input, stored.status) == (SPEC, {"month": "2026-11"},
                                                          RunStatus.PENDING)
    assert [(s.step_id, s.map_index, s.status) for s in await workflows.steps("acme", run.id)] \
        == [("aggregate", -1, StepStatus.READY), ("total", -1, StepStatus.WAITING)]


async def test_the_same_idempotency_key_returns_the_stored_run_and_writes_nothing(
    workflows: WorkflowStore,
) -> None:
    first = await _create(workflows, key="nov-report")

    again, created = await workflows.create_run("acme", "report", "2", {"other": True}, None,
                                                idempotency_key="nov-report",
                                                steps=[NewStep("other")])

    assert (again, created) == (first, False)
    assert len(await workflows.steps("acme", first.id)) == 2
    runs, _ = await workflows.list_runs("acme")
    assert [r.id for r in runs] == [first.id]
    assert (await _create(workflows, tenant="globex", key="nov-report")).id != first.id


async def test_two_racing_creates_with_one_key_give_one_run(database_url: str) -> None:
    async with await WorkflowStore.open(database_url) as one, \
            await WorkflowStore.open(database_url) as other:
        results = await asyncio.gather(*(
            store.create_run("acme", "report", "1", SPEC, {"n": i}, idempotency_key="race",
                             steps=STEPS)
            for i, store in enumerate([one, other, one, other])))

        assert len({run.id for run, _ in results}) == 1
        assert sorted(created for _, created in results) == [False, False, False, True]
        runs, _ = await one.list_runs("acme")
        assert len(runs) == 1
        assert len(await one.steps("acme", runs[0].id)) == 2


async def test_another_tenants_run_is_not_found_everywhere(workflows: WorkflowStore) -> None:
    run = await _create(workflows, tenant="acme")
    await workflows.update_steps(run.id, [StepChange(
        "total", StepStatus.WAITING, StepStatus.AWAITING_APPROVAL)])

    with pytest.raises(NotFound):
        await workflows.run("globex", run.id)
    with pytest.raises(NotFound):
        await workflows.steps("globex", run.id)
    with pytest.raises(NotFound):
        await workflows.set_run_status("globex", run.id, RunStatus.CANCELLED)
    with pytest.raises(NotFound):
        await workflows.record_approval("globex", run.id, "total", "approve", "mallory")
    assert await workflows.list_runs("globex") == ([], None)
    assert (await workflows.run("acme", run.id)).status is RunStatus.PENDING
    assert {s.step_id: s.status for s in await workflows.steps("acme", run.id)}["total"] \
        is StepStatus.AWAITING_APPROVAL


async def test_a_finished_run_never_changes_status(workflows: WorkflowStore) -> None:
    run = await _create(workflows)
    assert (await workflows.set_run_status("acme", run.id, "running")).status \
        is RunStatus.RUNNING
    failed = await workflows.set_run_status("acme", run.id, RunStatus.FAILED,
                                            error={"step": "total", "message": "boom"})
    assert failed.finished_at is not None and failed.error == {"step": "total",
                                                               "message": "boom"}

    for status in (RunStatus.RUNNING, RunStatus.SUCCEEDED, RunStatus.CANCELLED):
        with pytest.raises(Conflict):
            await workflows.set_run_status("acme", run.id, status)
    assert await workflows.set_run_status("acme", run.id, RunStatus.FAILED) == failed
    with pytest.raises(InvalidRequest) as raised:
        await workflows.set_run_status("acme", run.id, "finished")
    assert raised.value.details == {"field": "status"}


async def test_step_changes_compare_and_set_and_a_succeeded_step_is_never_overwritten(
    workflows: WorkflowStore,
) -> None:
    run = await _create(workflows)
    start = StepChange("aggregate", StepStatus.READY, StepStatus.RUNNING, task_id="t" * 32)
    assert await workflows.update_steps(run.id, [start]) == [start]
    done = StepChange("aggregate", StepStatus.RUNNING, StepStatus.SUCCEEDED, output={"sum": 3})
    stale = StepChange("aggregate", StepStatus.RUNNING, StepStatus.FAILED, error={"m": "late"})
    ready = StepChange("total", StepStatus.WAITING, StepStatus.READY)

    assert await workflows.update_steps(run.id, [done, ready]) == [done, ready]
    assert await workflows.update_steps(run.id, [stale]) == []
    with pytest.raises(InvalidRequest):
        await workflows.update_steps(run.id, [StepChange(
            "aggregate", StepStatus.SUCCEEDED, StepStatus.READY)])

    aggregate, total = await workflows.steps("acme", run.id)
    assert (aggregate.status, aggregate.output, aggregate.error, aggregate.task_id) == (
        StepStatus.SUCCEEDED, {"sum": 3}, None, "t" * 32)
    assert total.status is StepStatus.READY


async def test_fan_out_items_are_added_once(workflows: WorkflowStore) -> None:
    run = await _create(workflows)
    items = [NewStep("score", map_index=i, status=StepStatus.READY) for i in range(3)]

    await workflows.update_steps(run.id, [], new_steps=items)
    await workflows.update_steps(run.id, [StepChange("score", StepStatus.READY,
                                                     StepStatus.RUNNING, map_index=1)])
    await workflows.update_steps(run.id, [], new_steps=items)

    scores = [s for s in await workflows.steps("acme", run.id) if s.step_id == "score"]
    assert [(s.map_index, s.status) for s in scores] == [
        (0, StepStatus.READY), (1, StepStatus.RUNNING), (2, StepStatus.READY)]


async def test_an_approval_is_recorded_once_and_only_when_awaited(
    workflows: WorkflowStore,
) -> None:
    run = await _create(workflows)
    with pytest.raises(Conflict):
        await workflows.record_approval("acme", run.id, "total", "approve", "alice")
    await workflows.update_steps(run.id, [StepChange(
        "total", StepStatus.WAITING, StepStatus.AWAITING_APPROVAL,
        wake_at=utcnow() + timedelta(hours=1))])

    step = await workflows.record_approval("acme", run.id, "total", Decision.REJECT, "alice",
                                           "numbers look off")

    assert (step.status, step.decision, step.decided_by, step.decision_comment, step.wake_at) \
        == (StepStatus.FAILED, Decision.REJECT, "alice", "numbers look off", None)
    with pytest.raises(Conflict):
        await workflows.record_approval("acme", run.id, "total", "approve", "bob")
    with pytest.raises(NotFound):
        await workflows.record_approval("acme", run.id, "nope", "approve", "bob")
    with pytest.raises(InvalidRequest) as raised:
        await workflows.record_approval("acme", run.id, "total", "maybe", "bob")
    assert raised.value.details == {"field": "decision"}
    assert (await workflows.steps("acme", run.id))[1] == step


async def test_an_approved_step_that_runs_a_task_becomes_ready_and_a_pure_approval_succeeds(
    workflows: WorkflowStore,
) -> None:
    spec = {"name": "report", "version": "1", "steps": [
        {"id": "sign", "approval": {"timeout_s": 3600}},
        {"id": "send", "agent_type": "communication", "approval": {"timeout_s": 3600}}]}
    waiting = [NewStep(step, status=StepStatus.AWAITING_APPROVAL,
                       wake_at=utcnow() + timedelta(hours=1)) for step in ("sign", "send")]
    run, _ = await workflows.create_run("acme", "report", "1", spec, {}, steps=waiting)

    signed = await workflows.record_approval("acme", run.id, "sign", "approve", "alice")
    sent = await workflows.record_approval("acme", run.id, "send", "approve", "alice")

    assert signed.status is StepStatus.SUCCEEDED and signed.output["decision"] == "approve"
    # its task has yet to run: a succeeded row would never change again
    assert (sent.status, sent.decision, sent.output) == (StepStatus.READY, Decision.APPROVE, None)


async def test_due_steps_are_timers_and_approval_timeouts_past_due_in_open_runs(
    workflows: WorkflowStore,
) -> None:
    now = utcnow()
    due = await _create(workflows, steps=[
        NewStep("sleep", status=StepStatus.TIMER, wake_at=now - timedelta(seconds=5)),
        NewStep("later", status=StepStatus.TIMER, wake_at=now + timedelta(hours=1)),
        NewStep("sign", status=StepStatus.AWAITING_APPROVAL, wake_at=now - timedelta(seconds=1)),
        NewStep("ran", status=StepStatus.SUCCEEDED, wake_at=now - timedelta(seconds=9)),
    ])
    other = await _create(workflows, tenant="globex", steps=[
        NewStep("sleep", status=StepStatus.TIMER, wake_at=now - timedelta(seconds=3))])
    cancelled = await _create(workflows, steps=[
        NewStep("sleep", status=StepStatus.TIMER, wake_at=now - timedelta(seconds=7))])
    await workflows.set_run_status("acme", cancelled.id, RunStatus.CANCELLED)

    found = await workflows.due_steps(now)

    assert [(tenant, s.run_id, s.step_id) for tenant, s in found] == [
        ("acme", due.id, "sleep"), ("globex", other.id, "sleep"), ("acme", due.id, "sign")]
    assert len(await workflows.due_steps(now, limit=1)) == 1


async def test_runs_list_newest_first_in_keyset_pages(workflows: WorkflowStore) -> None:
    created = [await _create(workflows) for _ in range(5)]
    await _create(workflows, tenant="globex")
    await workflows.set_run_status("acme", created[1].id, RunStatus.RUNNING)

    pages, cursor = [], None
    while True:
        page, cursor = await workflows.list_runs("acme", limit=2, cursor=cursor)
        pages.append([r.id for r in page])
        if cursor is None:
            break

    newest_first = [r.id for r in sorted(created, key=lambda r: (r.created_at, r.id),
                                         reverse=True)]
    assert [len(p) for p in pages] == [2, 2, 1]
    assert sum(pages, []) == newest_first
    running, _ = await workflows.list_runs("acme", status="running")
    assert [r.id for r in running] == [created[1].id]
    with pytest.raises(InvalidRequest) as raised:
        await workflows.list_runs("acme", cursor="not-a-cursor")
    assert raised.value.details == {"field": "cursor"}


async def test_runs_to_advance_are_the_unfinished_runs_of_every_tenant(
    workflows: WorkflowStore,
) -> None:
    pending = await _create(workflows)
    waiting = await _create(workflows, tenant="globex")
    await workflows.set_run_status("globex", waiting.id, RunStatus.WAITING)
    done = await _create(workflows)
    await workflows.set_run_status("acme", done.id, RunStatus.SUCCEEDED)

    first, cursor = await workflows.runs_to_advance(limit=1)
    rest, end = await workflows.runs_to_advance(limit=1, cursor=cursor)

    assert [r.id for r in first + rest] == [pending.id, waiting.id]
    assert end is None


async def test_purge_deletes_old_finished_runs_in_batches_and_keeps_the_rest(
    workflows: WorkflowStore, monkeypatch: pytest.MonkeyPatch,
) -> None:
    finished = [await _create(workflows) for _ in range(5)]
    for run in finished:
        await workflows.set_run_status("acme", run.id, RunStatus.SUCCEEDED)
    running = await _create(workflows)
    await workflows.set_run_status("acme", running.id, RunStatus.RUNNING)
    cutoff = utcnow()
    recent = await _create(workflows)
    await workflows.set_run_status("acme", recent.id, RunStatus.FAILED)
    transactions = []
    opened = workflows._transaction

    def counted(doing: str, *args):
        transactions.append(doing)
        return opened(doing, *args)

    monkeypatch.setattr(workflows, "_transaction", counted)

    assert await workflows.purge_finished(utcnow() - timedelta(days=1), batch_size=2) == 0
    assert await workflows.purge_finished(cutoff, batch_size=2) == 5
    assert len(transactions) == 1 + 3  # batches of 2, 2 and 1

    left, _ = await workflows.list_runs("acme")
    assert {r.id for r in left} == {running.id, recent.id}
    for run in finished:
        with pytest.raises(NotFound):
            await workflows.steps("acme", run.id)
    step_rows = await workflows._fetch(select(workflow_steps_table.c.run_id).distinct())
    assert {row.run_id for row in step_rows} == {running.id, recent.id}
    assert len(await workflows.steps("acme", running.id)) == 2
    with pytest.raises(InvalidRequest):
        await workflows.purge_finished(cutoff, batch_size=0)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"tenant": ""}, "tenant"), ({"name": "x" * 129}, "name"), ({"spec": [1]}, "spec"),
     ({"input": {"bad": float("nan")}}, "input"), ({"idempotency_key": ""}, "idempotency_key"),
     ({"steps": [NewStep("a"), NewStep("a")]}, "steps"),
     ({"steps": [NewStep("a", map_index=-2)]}, "map_index")],
)
async def test_a_bad_run_is_refused_naming_the_field_and_nothing_is_stored(
    workflows: WorkflowStore, kwargs: dict, field: str,
) -> None:
    arguments = {"tenant": "acme", "name": "report", "version": "1", "spec": SPEC,
                 "input": None, "steps": STEPS, **kwargs}

    with pytest.raises(InvalidRequest) as raised:
        await workflows.create_run(**arguments)

    assert raised.value.details["field"] == field
    assert await workflows.list_runs("acme") == ([], None)


async def test_stopping_a_run_cancels_its_unfinished_steps_in_one_write(workflows: WorkflowStore) -> None:
    run, _ = await workflows.create_run("acme", "stop", "1", SPEC, {}, steps=[
        NewStep("a"), NewStep("b"), NewStep("c")])
    await workflows.update_steps(run.id, [
        StepChange("a", StepStatus.WAITING, StepStatus.SUCCEEDED, output=1),
        StepChange("b", StepStatus.WAITING, StepStatus.RUNNING, task_id="t-b")])
    with pytest.raises(NotFound):  # another tenant's run
        await workflows.stop_run("globex", run.id, RunStatus.CANCELLED)
    stopped, tasks = await workflows.stop_run("acme", run.id, RunStatus.CANCELLED,
                                          {"message": "cancelled by request"})
    assert stopped.status is RunStatus.CANCELLED and tasks == ["t-b"]
    assert {s.step_id: s.status for s in await workflows.steps("acme", run.id)} == {
        "a": StepStatus.SUCCEEDED, "b": StepStatus.CANCELLED, "c": StepStatus.CANCELLED}
    kinds = [e.kind for e in await workflows.run_events("acme", run.id)]
    assert kinds[-1] == "run_cancelled" and kinds.count("step_cancelled") == 2
    with pytest.raises(Conflict, match="already cancelled"):
        await workflows.stop_run("acme", run.id, RunStatus.CANCELLED)


async def test_a_plan_and_the_runs_status_are_stored_together(workflows: WorkflowStore) -> None:
    run = await _create(workflows)
    applied, changed = await workflows.apply_plan(
        run.id, [StepChange("aggregate", StepStatus.READY, StepStatus.AWAITING_APPROVAL)],
        run_status=RunStatus.WAITING)
    assert len(applied) == 1 and changed
    assert (await workflows.run("acme", run.id)).status is RunStatus.WAITING
    kinds = [e.kind for e in await workflows.run_events("acme", run.id)]
    assert kinds[-2:] == ["step_awaiting_approval", "run_waiting"]
    await workflows.stop_run("acme", run.id, RunStatus.CANCELLED)
    _, changed = await workflows.apply_plan(run.id, [], run_status=RunStatus.RUNNING)
    assert not changed  # a finished run never changes status again
    assert (await workflows.run("acme", run.id)).status is RunStatus.CANCELLED
