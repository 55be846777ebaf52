"""The workflow planner: pure logic, driven over an in-memory copy of a run's step rows."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from actors.workflow_advance import (
    Plan, TaskOutcome, idempotency_key, initial_steps, plan,
    step_label)
from storage.messages import TaskStatus
from storage.workflow_records import (
    UNCHANGED, UNMAPPED, Decision, RunStatus, StepStatus, WorkflowStep)
from storage.workflow_spec import WorkflowSpec, compile_spec

AGENTS = ["data_processor", "calculator", "text_analysis", "communication", "learning"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "workflows"
T0 = datetime(2026, 1, 1, 9, 0, tzinfo=timezone.utc)


def task(step_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": step_id, "agent_type": "calculator", **extra}


class Run:
    """A run's rows as the store would keep them, with the plans applied the way the engine will:
    compare-and-set changes, new rows, then each submission's task linked."""

    def __init__(self, spec: WorkflowSpec, run_input: Any = None, run_id: str = "run1") -> None:
        self.spec, self.input, self.id = spec, run_input, run_id
        self.now = T0
        self.rows: dict[tuple[str, int], WorkflowStep] = {}
        self.outcomes: dict[str, TaskOutcome] = {}
        self.submitted: dict[tuple[str, int], Any] = {}
        for new in initial_steps(spec):
            self._add(new.step_id, new.map_index, new.status, new.wake_at)
        self.status = RunStatus.PENDING
        self.error: Any = None

    def _add(self, step_id: str, index: int, status: StepStatus, wake_at: Any) -> None:
        self.rows[(step_id, index)] = WorkflowStep(
            self.id, step_id, index, status, None, None, None, None, None, None, None, wake_at,
            self.now)

    def plan(self) -> Plan:
        return plan(self.spec, self.input, list(self.rows.values()), self.outcomes, self.now,
                    tenant="acme")

    def apply(self, result: Plan) -> Plan:
        changes = list(result.changes)
        for new in result.new_steps:
            self._add(new.step_id, new.map_index, new.status, new.wake_at)
        for submission in result.submissions:
            self.submitted[(submission.step_id, submission.map_index)] = submission.request
            changes.append(submission.started(f"t-{submission.step_id}-{submission.map_index}"))
        for change in changes:
            key = (change.step_id, change.map_index)
            row = self.rows[key]
            assert row.status is not StepStatus.SUCCEEDED
            if row.status is not change.expected:
                continue
            values = {name: getattr(change, name) for name in ("task_id", "output", "error",
                                                                 "wake_at")
                      if getattr(change, name) is not UNCHANGED}
            self.rows[key] = dataclasses.replace(row, status=change.status, updated_at=self.now,
                                                 **values)
        self.status, self.error = result.run_status, result.error
        return result

    def step(self) -> Plan:
        self.now += timedelta(seconds=1)
        return self.apply(self.plan())

    def finish(self, step_id: str, result: Any = None, index: int = UNMAPPED,
               failed: bool = False) -> None:
        task_id = self.rows[(step_id, index)].task_id
        assert task_id, f"{step_id} has no task"
        self.outcomes[task_id] = TaskOutcome(TaskStatus.FAILED if failed else TaskStatus.SUCCEEDED,
                                             result=result, error={"message": "boom"})

    def decide(self, step_id: str, decision: Decision) -> None:
        """What `WorkflowStore.record_approval` stores."""
        row = self.rows[(step_id, UNMAPPED)]
        assert row.status is StepStatus.AWAITING_APPROVAL
        ok = decision is Decision.APPROVE
        self.rows[(step_id, UNMAPPED)] = dataclasses.replace(
            row, status=StepStatus.SUCCEEDED if ok else StepStatus.FAILED, decision=decision,
            wake_at=None, output={"decision": "approve"} if ok else None,
            error=None if ok else {"decision": "reject"}, updated_at=self.now)

    def status_of(self, step_id: str, index: int = UNMAPPED) -> StepStatus:
        return self.rows[(step_id, index)].status


def spec_of(*steps: dict[str, Any], policy: str = "fail_fast") -> WorkflowSpec:
    return compile_spec({"name": "w", "version": "1", "failure_policy": policy,
                         "steps": list(steps)}, AGENTS)


def test_a_chain_runs_step_by_step_feeding_outputs_forward() -> None:
    run = Run(spec_of(task("a", payload={"x": "${ input.n }"}),
                      task("b", depends_on=["a"], payload={"v": "${ steps.a.output.value }"},
                           priority=7, timeout_s=5, max_attempts=2)), {"n": 3})
    first = run.step()
    assert [(s.step_id, s.request.payload) for s in first.submissions] == [("a", {"x": 3})]
    assert run.status is RunStatus.RUNNING and run.status_of("b") is StepStatus.WAITING
    run.finish("a", {"value": 30})
    second = run.step()
    request = second.submissions[0].request
    assert (request.payload, request.priority, request.timeout_s, request.max_attempts) == (
        {"v": 30}, 7, 5, 2)
    assert request.agent_type == "calculator" and request.description == "workflow w step b"
    assert request.tenant == "acme"
    assert run.rows[("a", UNMAPPED)].output == {"value": 30}
    run.finish("b", {"value": 31})
    run.step()
    assert run.status is RunStatus.SUCCEEDED and run.error is None


def test_the_report_example_runs_to_the_end() -> None:
    spec = compile_spec((EXAMPLES / "report.yaml").read_text(), AGENTS)
    run = Run(spec, {"rows": [{"region": "n", "sales": 2}], "notes": "",
                     "webhook_url": "https://hooks.example.com/x"})
    first = run.step()
    # aggregate starts; summary's condition (input.notes) is empty text: skipped.
    assert [s.step_id for s in first.submissions] == ["aggregate"]
    assert run.status_of("summary") is StepStatus.SKIPPED
    run.finish("aggregate", {"rows": [{"region": "n", "sales": 2}]})
    assert run.step().submissions[0].request.payload == {"operation": "sum", "numbers": [2]}
    run.finish("total", {"value": 2})
    message = run.step().submissions[0].request.payload["message"]
    assert message == {"report": "sales", "total": 2, "by_region": [{"region": "n", "sales": 2}],
                       "summary": None}
    run.finish("notify", {"sent": True})
    run.step()
    assert run.status is RunStatus.SUCCEEDED


def test_a_false_condition_skips_and_dependents_see_null() -> None:
    run = Run(spec_of(task("maybe", condition="input.go"),
                      task("after", depends_on=["maybe"],
                           payload={"got": "${ steps.maybe.output }",
                                    "status": "${ steps.maybe.status }"})), {"go": False})
    result = run.step()
    assert run.status_of("maybe") is StepStatus.SKIPPED
    assert [(s.step_id, s.request.payload) for s in result.submissions] == [
        ("after", {"got": None, "status": "skipped"})]


def fan_out_spec(**extra: Any) -> WorkflowSpec:
    return spec_of(task("load"),
                   task("each", depends_on=["load"], payload={"n": "${ item }"},
                        map_over={"over": "steps.load.output", "max_width": 5, "parallelism": 2},
                        **extra),
                   task("sum", depends_on=["each"], payload={"all": "${ steps.each.output }"}))


def test_fan_out_respects_parallelism_and_fans_in_in_order() -> None:
    run = Run(fan_out_spec())
    run.step()
    run.finish("load", [10, 20, 30])
    result = run.step()
    assert sorted((n.step_id, n.map_index) for n in result.new_steps) == [
        ("each", 0), ("each", 1), ("each", 2)]
    assert [(s.map_index, s.request.payload) for s in result.submissions] == [
        (0, {"n": 10}), (1, {"n": 20})]
    assert run.status_of("each", 2) is StepStatus.WAITING
    run.finish("each", 200, index=1)
    assert [s.map_index for s in run.step().submissions] == [2]
    run.finish("each", 100, index=0)
    run.finish("each", 300, index=2)
    assert run.step().submissions[0].request.payload == {"all": [100, 200, 300]}


def test_a_fan_out_over_its_max_width_fails_the_step_naming_the_limit() -> None:
    run = Run(fan_out_spec())
    run.step()
    run.finish("load", list(range(6)))
    result = run.step()
    assert not result.new_steps and not result.submissions
    assert run.status_of("each") is StepStatus.FAILED
    assert "max_width is 5" in run.rows[("each", UNMAPPED)].error["message"]
    assert run.status is RunStatus.FAILED and run.error["step"] == "each"
    assert run.status_of("sum") is StepStatus.CANCELLED


def branches(policy: str) -> Run:
    return Run(spec_of(task("a"), task("bad"), task("after_bad", depends_on=["bad"]),
                       task("after_a", depends_on=["a"]), policy=policy))


def test_fail_fast_cancels_what_has_not_started_and_fails_the_run() -> None:
    run = branches("fail_fast")
    run.step()
    run.finish("bad", failed=True)
    run.step()
    assert run.status_of("after_bad") is StepStatus.CANCELLED
    assert run.status_of("after_a") is StepStatus.CANCELLED
    # "a" was running: it is let finish before the run ends.
    assert run.status is RunStatus.RUNNING
    run.finish("a", 1)
    assert not run.step().submissions
    assert run.status is RunStatus.FAILED
    assert run.error["step"] == "bad" and "'bad'" in run.error["message"]


def test_finish_branches_lets_independent_branches_go_on() -> None:
    run = branches("finish_branches")
    run.step()
    run.finish("bad", failed=True)
    run.finish("a", 1)
    assert [s.step_id for s in run.step().submissions] == ["after_a"]
    assert run.status_of("after_bad") is StepStatus.CANCELLED
    assert run.status is RunStatus.RUNNING
    run.finish("after_a", 2)
    run.step()
    assert run.status is RunStatus.FAILED and run.error["step"] == "bad"


def approval_run(on_timeout: str = "reject") -> Run:
    return Run(spec_of({"id": "ok", "approval": {"timeout_s": 60, "on_timeout": on_timeout},
                        "payload": {"model": "m"}},
                       task("notify", depends_on=["ok"],
                            payload={"d": "${ steps.ok.output.decision }"})))


def test_an_approval_waits_for_the_decision() -> None:
    run = approval_run()
    result = run.step()
    assert run.status_of("ok") is StepStatus.AWAITING_APPROVAL
    assert result.wake_at == run.now + timedelta(seconds=60)
    assert run.status is RunStatus.WAITING and not result.submissions
    run.decide("ok", Decision.APPROVE)
    assert run.step().submissions[0].request.payload == {"d": "approve"}


def test_a_rejected_approval_fails_the_run() -> None:
    run = approval_run()
    run.step()
    run.decide("ok", Decision.REJECT)
    run.step()
    assert run.status is RunStatus.FAILED and run.error["step"] == "ok"
    assert run.status_of("notify") is StepStatus.CANCELLED


@pytest.mark.parametrize("on_timeout", ["approve", "reject"])
def test_an_undecided_approval_takes_its_timeout_outcome_when_due(on_timeout: str) -> None:
    run = approval_run(on_timeout)
    run.step()
    run.now += timedelta(seconds=30)
    assert not run.plan().has_work  # not due yet
    run.now += timedelta(seconds=30)
    result = run.apply(run.plan())
    if on_timeout == "approve":
        assert run.status_of("ok") is StepStatus.SUCCEEDED
        assert result.submissions[0].request.payload == {"d": "approve"}
    else:
        assert run.status_of("ok") is StepStatus.FAILED and run.status is RunStatus.FAILED
        assert run.rows[("ok", UNMAPPED)].error["timed_out"] is True


def test_a_timer_waits_then_succeeds() -> None:
    run = Run(spec_of({"id": "pause", "timer": {"wait_s": 600}}, task("b", depends_on=["pause"])))
    first = run.step()
    assert run.status_of("pause") is StepStatus.TIMER and run.status is RunStatus.WAITING
    assert run.rows[("pause", UNMAPPED)].wake_at == first.wake_at == run.now + timedelta(
        seconds=600)
    run.now += timedelta(seconds=599)
    assert not run.plan().has_work
    run.now += timedelta(seconds=1)
    assert [s.step_id for s in run.apply(run.plan()).submissions] == ["b"]
    assert run.status_of("pause") is StepStatus.SUCCEEDED


def test_compensation_runs_in_reverse_completion_order_then_the_run_fails() -> None:
    run = Run(spec_of(task("one", compensate="undo_one"), task("two", compensate="undo_two"),
                      task("three", depends_on=["one", "two"]),
                      task("undo_one", payload={"was": "${ steps.one.output }"}),
                      task("undo_two"), task("never", compensate="undo_never"),
                      task("undo_never")))
    run.step()
    run.finish("two", 2)
    run.step()
    run.finish("one", 1)
    run.step()
    run.finish("never", failed=True)
    run.finish("three", failed=True)
    result = run.step()
    assert [s.step_id for s in result.submissions] == ["undo_one"]  # "one" completed last
    assert result.submissions[0].request.payload == {"was": 1}
    assert run.status is RunStatus.RUNNING
    run.finish("undo_one", None)
    assert [s.step_id for s in run.step().submissions] == ["undo_two"]
    run.finish("undo_two", None)
    run.step()
    assert run.status is RunStatus.FAILED
    assert run.status_of("undo_never") is StepStatus.SKIPPED


def test_planning_is_idempotent_and_an_applied_plan_leaves_nothing_to_do() -> None:
    run = Run(fan_out_spec())
    run.step()
    run.finish("load", [1, 2, 3])
    first, again = run.plan(), run.plan()
    assert first == again and first.has_work
    run.apply(first)
    assert not run.plan().has_work
    # A crash after storing the changes but before linking the tasks: the same tasks again.
    for key in [("each", 0), ("each", 1)]:
        run.rows[key] = dataclasses.replace(run.rows[key], task_id=None, status=StepStatus.READY)
    replanned = run.plan()
    assert not replanned.changes and not replanned.new_steps
    assert [s.request for s in replanned.submissions] == [run.submitted[("each", 0)],
                                                          run.submitted[("each", 1)]]


def test_idempotency_keys_are_stable_per_run_step_and_item() -> None:
    run = Run(fan_out_spec(), run_id="r42")
    run.step()
    assert run.submitted[("load", UNMAPPED)].idempotency_key == idempotency_key("r42", "load")
    run.finish("load", [1, 2])
    run.step()
    keys = {run.submitted[("each", i)].idempotency_key for i in (0, 1)}
    assert keys == {"wf:r42:each:0", "wf:r42:each:1"}
    assert idempotency_key("r42", "a:1") != idempotency_key("r42", "a", 1)


def test_a_succeeded_step_is_never_changed() -> None:
    run = Run(spec_of(task("a"), task("b")))
    run.step()
    run.finish("a", 1)
    run.finish("b", failed=True)
    run.step()
    assert run.status_of("a") is StepStatus.SUCCEEDED
    # Even with a later, contradicting task outcome, the succeeded row is left alone.
    task_id = run.rows[("a", UNMAPPED)].task_id
    assert task_id is not None
    run.outcomes[task_id] = TaskOutcome(TaskStatus.FAILED)
    assert not any(c.step_id == "a" for c in run.plan().changes)


def test_an_output_over_the_size_limit_fails_the_step() -> None:
    spec = compile_spec({"name": "w", "version": "1", "limits": {"max_output_bytes": 1024},
                         "steps": [task("a")]}, AGENTS)
    run = Run(spec)
    run.step()
    run.finish("a", "x" * 2000)
    run.step()
    assert run.status_of("a") is StepStatus.FAILED
    assert "max_output_bytes is 1024" in run.rows[("a", UNMAPPED)].error["message"]


def test_a_failed_item_fails_its_fan_out_and_cancels_the_items_not_started() -> None:
    run = Run(fan_out_spec())
    run.step()
    run.finish("load", [1, 2, 3])
    run.step()
    run.finish("each", index=0, failed=True)
    run.step()
    assert run.status_of("each") is StepStatus.FAILED
    assert run.rows[("each", UNMAPPED)].error["map_index"] == 0
    assert run.status_of("each", 2) is StepStatus.CANCELLED
    assert run.status_of("sum") is StepStatus.CANCELLED
    assert run.status is RunStatus.RUNNING  # item 1 still runs
    run.finish("each", 20, index=1)
    run.step()
    assert run.status is RunStatus.FAILED and run.error["step"] == "each"


def test_a_task_step_with_a_timer_runs_its_task_when_the_timer_is_due() -> None:
    run = Run(spec_of(task("later", timer={"wait_s": 60}, payload={"x": 1})))
    assert not run.step().submissions
    run.now += timedelta(seconds=60)
    assert [s.request.payload for s in run.apply(run.plan()).submissions] == [{"x": 1}]
    run.finish("later", 5)
    run.step()
    assert run.status is RunStatus.SUCCEEDED and run.rows[("later", UNMAPPED)].output == 5


def test_rows_missing_from_a_run_are_added_before_anything_is_planned() -> None:
    run = Run(spec_of(task("a"), task("b", depends_on=["a"])))
    del run.rows[("b", UNMAPPED)]
    result = run.apply(run.plan())
    assert [(n.step_id, n.status) for n in result.new_steps] == [("b", StepStatus.WAITING)]
    assert not result.submissions and not result.changes
    assert [s.step_id for s in run.step().submissions] == ["a"]


@pytest.mark.parametrize("key, label", [
    ("wf:r1:total:-1", "run=r1 step=total"),
    ("wf:r1:each:12", "run=r1 step=each[12]"),
    ("wf:r1:each:3:g2", "run=r1 step=each[3]"),
    ("wf:r1:a:b:-1", "run=r1 step=a:b"),
    ("my-own-key", None),
    (None, None),
])
def test_a_step_task_is_labelled_with_its_run_and_step(key, label) -> None:
    assert step_label(key) == label
    if key and key.startswith("wf:") and key.count(":") == 3:
        run, step, index = key.split(":")[1:]
        assert idempotency_key(run, step, int(index)) == key


def test_a_run_whose_steps_were_cancelled_without_a_failure_is_cancelled() -> None:
    """A stop that cancelled the steps resumes as cancelled, never as succeeded."""
    run = Run(spec_of(task("a"), task("b", depends_on=["a"])))
    for key, row in run.rows.items():
        run.rows[key] = dataclasses.replace(row, status=StepStatus.CANCELLED)
    assert run.plan().run_status is RunStatus.CANCELLED
