"""`ymera workflow get`'s text: steps in dependency order with their state, fan-outs summed up,
approvals with who decided, errors, and the run's status and duration. Pure rendering."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cluster.workflow_view import map_summary, render_event, render_run, render_run_line
from storage.workflow_records import (
    UNMAPPED,
    Decision,
    RunDetail,
    RunEvent,
    RunStatus,
    StepStatus,
    WorkflowRun,
    WorkflowStep,
)
from storage.workflow_spec import compile_spec

T0 = datetime(2026, 12, 4, 22, 0, tzinfo=timezone.utc)
AGENTS = ["data_processor", "calculator", "text_analysis", "communication"]
# written in an order that is not the dependency order: the view sorts it
DOCUMENT = {
    "name": "report", "version": "3",
    "steps": [
        {"id": "notify", "agent_type": "communication", "depends_on": ["review", "score"],
         "payload": {"total": "${ steps.total.output.value }"}, "compensate": "retract"},
        {"id": "aggregate", "agent_type": "data_processor", "payload": {"rows": "${ input.rows }"}},
        {"id": "total", "agent_type": "calculator", "depends_on": ["aggregate"],
         "payload": {"numbers": "${ steps.aggregate.output.rows[*].sales }"}},
        {"id": "score", "agent_type": "text_analysis", "depends_on": ["aggregate"],
         "map_over": {"over": "input.reviews", "max_width": 1000, "parallelism": 8},
         "payload": {"text": "${ item }"}},
        {"id": "review", "approval": {"timeout_s": 3600}, "depends_on": ["total"],
         "payload": {"total": "${ steps.total.output.value }"}},
        {"id": "retract", "agent_type": "communication", "payload": {"retract": True}},
    ]}
SPEC = compile_spec(DOCUMENT, AGENTS).to_json()


def run(status: RunStatus = RunStatus.RUNNING, finished_after_s: float | None = None,
        error: object = None, spec: dict | None = None) -> WorkflowRun:
    finished = T0 + timedelta(seconds=finished_after_s) if finished_after_s is not None else None
    return WorkflowRun(id="run-1", tenant="acme", name="report", version="3",
                       spec=SPEC if spec is None else spec, input={}, status=status,
                       idempotency_key=None, error=error, created_at=T0, updated_at=T0,
                       finished_at=finished, deadline_at=None)


def step(step_id: str, status: StepStatus, map_index: int = UNMAPPED, **fields) -> WorkflowStep:
    values: dict = dict(run_id="run-1", step_id=step_id, map_index=map_index, status=status,
                        task_id=None, output=None, error=None, decision=None, decided_by=None,
                        decided_at=None, decision_comment=None, wake_at=None, updated_at=T0)
    values.update(fields)
    return WorkflowStep(**values)


def step_lines(text: str) -> list[str]:
    return [line for line in text.splitlines()[1:] if line.startswith("  ") and
            not line.startswith("      ")]


def test_steps_come_in_dependency_order_with_their_state_and_task() -> None:
    detail = RunDetail(run(RunStatus.SUCCEEDED, finished_after_s=12.4), (
        step("notify", StepStatus.SUCCEEDED, task_id="t-notify"),
        step("total", StepStatus.SUCCEEDED, task_id="t-total"),
        step("aggregate", StepStatus.SUCCEEDED, task_id="t-agg"),
        step("score", StepStatus.SUCCEEDED),
        step("review", StepStatus.SUCCEEDED, decision=Decision.APPROVE, decided_by="alice",
             decided_at=T0 + timedelta(seconds=5), decision_comment="fine"),
        step("retract", StepStatus.SKIPPED),
    ))
    text = render_run(detail)
    header, *_ = text.splitlines()
    assert header.startswith("run run-1  report v3  ✓ succeeded in 12.4s")
    assert "tenant acme" in header
    lines = step_lines(text)
    assert [line.split()[1] for line in lines] == [
        "aggregate", "total", "score", "review", "notify", "retract"]
    assert lines[0].split()[:3] == ["✓", "aggregate", "succeeded"] and "task t-agg" in lines[0]
    assert "after aggregate" in lines[1]
    (notify,) = [s for s in SPEC["steps"] if s["id"] == "notify"]
    assert sorted(notify["depends_on"]) == ["review", "score"]
    assert lines[4].endswith("after " + ", ".join(notify["depends_on"]))
    assert lines[5].split()[:3] == ["–", "retract", "skipped"]
    assert "compensates notify" in lines[5]


def test_steps_left_waiting_by_a_finished_run_were_not_run() -> None:
    detail = RunDetail(run(RunStatus.SUCCEEDED, finished_after_s=3), (
        step("notify", StepStatus.SUCCEEDED), step("retract", StepStatus.WAITING)))
    (retract,) = [line for line in render_run(detail).splitlines() if " retract " in line]
    assert retract.split()[:4] == ["·", "retract", "not", "run"]
    running = RunDetail(run(RunStatus.RUNNING), (step("retract", StepStatus.WAITING),))
    (retract,) = [line for line in render_run(running).splitlines() if " retract " in line]
    assert retract.split()[:3] == ["·", "retract", "waiting"]


def test_a_fan_out_is_summed_up_and_its_first_errors_shown() -> None:
    items = [step("score", StepStatus.SUCCEEDED, i) for i in range(994)]
    items += [step("score", StepStatus.RUNNING, 994 + i) for i in range(2)]
    items += [step("score", StepStatus.FAILED, 996 + i,
                   error={"code": "agent_error", "message": f"bad review {996 + i}"})
              for i in range(4)]
    detail = RunDetail(run(), (step("aggregate", StepStatus.SUCCEEDED),
                               step("score", StepStatus.RUNNING), *items))
    text = render_run(detail, now=T0 + timedelta(seconds=3))
    (score,) = [line for line in text.splitlines() if " score " in line]
    assert "map 994/1000 succeeded, 4 failed, 2 running" in score
    assert "item 996: agent_error: bad review 996" in text
    assert "item 998: agent_error: bad review 998" in text
    assert "item 999" not in text and "... and 1 more failed items" in text
    assert "running for 3.0s" in text.splitlines()[0]


def test_map_summary_counts_every_status() -> None:
    items = [step("s", StepStatus.SUCCEEDED, 0), step("s", StepStatus.SUCCEEDED, 1),
             step("s", StepStatus.CANCELLED, 2)]
    assert map_summary(items) == "map 2/3 succeeded, 1 cancelled"
    assert map_summary(items[:2]) == "map 2/2 succeeded"


def test_approvals_show_who_decided_or_how_to_decide() -> None:
    waiting = RunDetail(run(RunStatus.WAITING), (
        step("review", StepStatus.AWAITING_APPROVAL, wake_at=T0 + timedelta(hours=1)),))
    lines = render_run(waiting).splitlines()
    (review,) = [i for i, line in enumerate(lines) if line.split()[1:2] == ["review"]]
    assert lines[review].split()[:4] == ["?", "review", "awaiting", "approval"]
    assert lines[review + 1].strip() == "times out 2026-12-04T23:00:00+00:00"
    assert "ymera workflow approve|reject run-1 review" in lines[review + 2]

    rejected = RunDetail(run(RunStatus.FAILED, finished_after_s=90), (
        step("review", StepStatus.FAILED, decision=Decision.REJECT, decided_by="cli:bob",
             decided_at=T0 + timedelta(seconds=60), decision_comment="numbers look off",
             error={"code": "rejected", "message": "rejected by cli:bob"}),))
    text = render_run(rejected)
    assert ("rejected by cli:bob at 2026-12-04T22:01:00+00:00: 'numbers look off'"
            in text)
    assert "error: rejected: rejected by cli:bob" in text
    assert "approve|reject" not in text  # a finished run takes no decision


def test_the_run_error_and_unstarted_steps_are_shown() -> None:
    detail = RunDetail(run(RunStatus.FAILED, finished_after_s=300,
                           error={"code": "step_failed", "message": "step total failed"}),
                       (step("aggregate", StepStatus.SUCCEEDED),
                        step("total", StepStatus.FAILED, error="division by zero")))
    text = render_run(detail)
    assert "✗ failed in 5.0m" in text.splitlines()[0]
    assert text.splitlines()[1] == "  error: step_failed: step total failed"
    assert "error: division by zero" in text
    (notify,) = [line for line in text.splitlines() if " notify " in line]
    assert "not started" in notify


def test_ascii_only_output_for_terminals_without_unicode() -> None:
    detail = RunDetail(run(RunStatus.SUCCEEDED, finished_after_s=1),
                       tuple(step(s, StepStatus.SUCCEEDED) for s in ("aggregate", "total")))
    text = render_run(detail, ascii_only=True)
    assert text.isascii()
    assert "+ aggregate  succeeded" in text


def test_a_spec_this_code_cannot_read_still_shows_the_rows() -> None:
    detail = RunDetail(run(spec={"steps": "from a newer platform"}),
                       (step("first", StepStatus.RUNNING, task_id="t-1"),))
    assert render_run(detail).splitlines()[1].split() == ["▶", "first", "running", "task", "t-1"]


def test_listing_lines_and_event_lines() -> None:
    line = render_run_line(run(RunStatus.SUCCEEDED, finished_after_s=2))
    assert line.startswith("run-1  succeeded  report v3  created 2026-12-04 22:00:00")
    assert line.endswith("in 2.0s")
    event = RunEvent(id=42, run_id="run-1", kind="step_running", step_id="score", map_index=7,
                     at=T0, data={"task_id": "t-7"})
    assert render_event(event) == ('    42  2026-12-04T22:00:00.000+00:00  step_running'
                                   '             score[7]  {"task_id":"t-7"}')
    created = RunEvent(id=1, run_id="run-1", kind="run_created", step_id=None, map_index=None,
                       at=T0)
    assert render_event(created).endswith("+00:00  run_created")
