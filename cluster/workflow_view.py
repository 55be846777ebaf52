"""The readable text of a workflow run: what `ymera workflow get` prints.

    run 5c1f0e...  report v1  ✓ succeeded in 12.4s  (tenant default, 4 steps)
      ✓ aggregate  succeeded  task 9a1b...
      ✓ total      succeeded  task 77c2...  after aggregate
      – summary    skipped
      ? approve    awaiting approval  after total
                   times out 2026-12-05T09:00:00+00:00

Steps come in dependency order (the spec's), compensation steps last; a mapped step shows its
items summed up (`map 998/1000 succeeded, 2 running`) and the first errors among them; an
approval shows who decided, when, and their comment. Rendering is pure: a `RunDetail` in, text
out, so it is tested without a cluster.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from storage.messages import as_utc, utcnow
from storage.workflow_records import (
    UNMAPPED,
    RunDetail,
    RunEvent,
    RunStatus,
    StepStatus,
    WorkflowRun,
    WorkflowStep,
)

STEP_GLYPHS = {
    StepStatus.WAITING: "·", StepStatus.READY: "○", StepStatus.RUNNING: "▶",
    StepStatus.SUCCEEDED: "✓", StepStatus.FAILED: "✗", StepStatus.SKIPPED: "–",
    StepStatus.CANCELLED: "⊘", StepStatus.AWAITING_APPROVAL: "?", StepStatus.TIMER: "⏲",
}
ASCII_STEP_GLYPHS = {
    StepStatus.WAITING: ".", StepStatus.READY: "o", StepStatus.RUNNING: ">",
    StepStatus.SUCCEEDED: "+", StepStatus.FAILED: "x", StepStatus.SKIPPED: "-",
    StepStatus.CANCELLED: "/", StepStatus.AWAITING_APPROVAL: "?", StepStatus.TIMER: "~",
}
RUN_GLYPH_OF = {
    RunStatus.PENDING: StepStatus.WAITING, RunStatus.RUNNING: StepStatus.RUNNING,
    RunStatus.WAITING: StepStatus.AWAITING_APPROVAL, RunStatus.SUCCEEDED: StepStatus.SUCCEEDED,
    RunStatus.FAILED: StepStatus.FAILED, RunStatus.CANCELLED: StepStatus.CANCELLED,
}
NOT_STARTED = "not started"
NOT_RUN = "not run"
STATE_WIDTH = len(StepStatus.SUCCEEDED.value)
ERRORS_SHOWN = 3
TEXT_WIDTH = 100


def render_run(detail: RunDetail, *, now: datetime | None = None, ascii_only: bool = False
               ) -> str:
    """The run as lines of text (see the module docstring); `ascii_only` for terminals that
    cannot print the status glyphs."""
    glyphs = ASCII_STEP_GLYPHS if ascii_only else STEP_GLYPHS
    run = detail.run
    lines = [_run_header(run, glyphs, now)]
    if run.error:
        lines.append(f"  error: {error_text(run.error)}")
    rows = _rows_by_step(detail.steps)
    order, depends, compensates = _graph(run.spec, rows)
    width = max((len(step_id) for step_id in order), default=0)
    for step_id in order:
        parent, items = rows.get(step_id, (None, []))
        lines.extend(_step_lines(step_id, parent, items, depends.get(step_id, ()),
                                 compensates.get(step_id), width, glyphs, run))
    return "\n".join(lines)


def render_run_line(run: WorkflowRun, *, now: datetime | None = None) -> str:
    """One line per run, for listings: id, status, workflow and version, age or duration."""
    created = as_utc(run.created_at).strftime("%Y-%m-%d %H:%M:%S")
    return (f"{run.id}  {run.status.value:<9}  {run.name} v{run.version}  created {created}  "
            f"{_duration_phrase(run, now)}")


def render_event(event: RunEvent) -> str:
    """One line per run event: id, time, kind, step (and item) and its data."""
    where = ""
    if event.step_id:
        where = event.step_id
        if event.map_index is not None and event.map_index != UNMAPPED:
            where += f"[{event.map_index}]"
    data = f"  {_short(event.data)}" if event.data not in (None, {}, []) else ""
    at = as_utc(event.at).isoformat(timespec="milliseconds")
    return f"{event.id:>6}  {at}  {event.kind:<24} {where}{data}".rstrip()


def error_text(error: Any) -> str:
    """An error as `code: message` when it has them, else as compact JSON."""
    if isinstance(error, dict) and error.get("message"):
        code = error.get("code")
        return f"{code}: {error['message']}" if code else str(error["message"])
    if isinstance(error, str):
        return error
    return _short(error)


def _run_header(run: WorkflowRun, glyphs: dict[StepStatus, str],
                now: datetime | None) -> str:
    glyph = glyphs[RUN_GLYPH_OF[run.status]]
    head = (f"run {run.id}  {run.name} v{run.version}  {glyph} {run.status.value} "
            f"{_duration_phrase(run, now)}  (tenant {run.tenant}")
    if run.generation:
        head += f", retried {run.generation}x"
    return head + ")"


def _duration_phrase(run: WorkflowRun, now: datetime | None) -> str:
    if run.finished_at is not None:
        return f"in {_seconds(run.finished_at - run.created_at)}"
    return f"for {_seconds((now or utcnow()) - run.created_at)}"


def _seconds(delta: Any) -> str:
    seconds = max(0.0, delta.total_seconds())
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _rows_by_step(steps: Iterable[WorkflowStep]
                  ) -> dict[str, tuple[WorkflowStep | None, list[WorkflowStep]]]:
    """Each step's own row and its fan-out items (in index order)."""
    rows: dict[str, tuple[WorkflowStep | None, list[WorkflowStep]]] = {}
    for row in steps:
        parent, items = rows.get(row.step_id, (None, []))
        if row.map_index == UNMAPPED:
            parent = row
        else:
            items.append(row)
        rows[row.step_id] = (parent, items)
    for parent, items in rows.values():
        items.sort(key=lambda item: item.map_index)
    return rows


def _graph(spec: Any, rows: dict[str, Any]
           ) -> tuple[list[str], dict[str, Sequence[str]], dict[str, str]]:
    """Step ids in dependency order (compensation steps last, then any row the spec does not
    name), each step's dependencies, and what each compensation step compensates."""
    from storage.workflow_spec import spec_from_json

    try:
        parsed = spec_from_json(spec)
    except Exception:  # a spec this code cannot read: show the rows as stored
        return list(rows), {}, {}
    order = parsed.order()
    compensates = {step.compensate: step.id for step in parsed.steps if step.compensate}
    order += [step.id for step in parsed.steps if step.id in compensates]
    order += [step_id for step_id in rows if step_id not in order]
    depends: dict[str, Sequence[str]] = {step.id: step.depends_on for step in parsed.steps}
    return order, depends, compensates


def _step_lines(step_id: str, parent: WorkflowStep | None, items: list[WorkflowStep],
                depends_on: Sequence[str], compensates: str | None, width: int,
                glyphs: dict[StepStatus, str], run: WorkflowRun) -> list[str]:
    status = parent.status if parent is not None else None
    glyph = glyphs[status] if status is not None else glyphs[StepStatus.WAITING]
    state = _state_phrase(parent, run) if parent is not None else NOT_STARTED
    parts = [f"  {glyph} {step_id:<{width}}  {state:<{STATE_WIDTH}}"]
    if parent is not None and parent.task_id:
        parts.append(f"task {parent.task_id}")
    if items:
        parts.append(map_summary(items))
    if depends_on:
        parts.append("after " + ", ".join(depends_on))
    if compensates:
        parts.append(f"compensates {compensates}")
    lines = ["  ".join(parts).rstrip()]
    indent = " " * (width + 6)
    if parent is not None:
        lines.extend(indent + line for line in _waiting_lines(parent, run))
        lines.extend(indent + line for line in _decision_lines(parent))
        if parent.error:
            lines.append(f"{indent}error: {error_text(parent.error)}")
    failed = [item for item in items if item.status is StepStatus.FAILED]
    for item in failed[:ERRORS_SHOWN]:
        lines.append(f"{indent}item {item.map_index}: {error_text(item.error)}")
    if len(failed) > ERRORS_SHOWN:
        lines.append(f"{indent}... and {len(failed) - ERRORS_SHOWN} more failed items")
    return lines


def _state_phrase(step: WorkflowStep, run: WorkflowRun) -> str:
    if run.status.is_finished and step.status in (StepStatus.WAITING, StepStatus.READY):
        return NOT_RUN  # say, a compensation step of a run that succeeded
    if step.status is StepStatus.AWAITING_APPROVAL:
        return "awaiting approval"
    if step.status is StepStatus.TIMER and step.wake_at is not None:
        return f"timer until {_time(step.wake_at)}"
    return step.status.value


def _waiting_lines(step: WorkflowStep, run: WorkflowRun) -> list[str]:
    if step.status is not StepStatus.AWAITING_APPROVAL:
        return []
    lines = []
    if step.wake_at is not None:
        lines.append(f"times out {as_utc(step.wake_at).isoformat()}")
    if not run.status.is_finished:
        lines.append(f"decide: ymera workflow approve|reject {run.id} {step.step_id} "
                     "[--comment TEXT]")
    return lines


def _decision_lines(step: WorkflowStep) -> list[str]:
    if step.decision is None:
        return []
    verb = "approved" if step.decision.value == "approve" else "rejected"
    line = f"{verb} by {step.decided_by or 'the timeout'}"
    if step.decided_at is not None:
        line += f" at {_time(step.decided_at)}"
    if step.decision_comment:
        line += f": {step.decision_comment!r}"
    return [line]


def map_summary(items: Sequence[WorkflowStep]) -> str:
    """`map 998/1000 succeeded, 2 running`: the items of a fan-out by status."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.status.value] = counts.get(item.status.value, 0) + 1
    succeeded = counts.pop(StepStatus.SUCCEEDED.value, 0)
    rest = ", ".join(f"{count} {status}" for status, count in
                     sorted(counts.items(), key=lambda pair: (-pair[1], pair[0])))
    return f"map {succeeded}/{len(items)} succeeded" + (f", {rest}" if rest else "")


def _time(value: datetime) -> str:
    return as_utc(value).isoformat(timespec="seconds")


def _short(value: Any) -> str:
    text = json.dumps(value, default=str, separators=(",", ":"))
    return text if len(text) <= TEXT_WIDTH else text[:TEXT_WIDTH - 3] + "..."
