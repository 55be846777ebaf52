"""What the workflow engine keeps in memory of the runs it advances: a copy of each run and of
its step rows, so that planning again does not read them all again.

Only the engine changes a run and its rows, and it updates these copies with every change it
stores (`remember`); a change made any other way (a person's decision, a retry, a compare-and-set
that missed) is followed by `forget`, and the next read comes from storage. A run waiting for a
person or a timer keeps nothing here; the rows of at most `ROWS_KEPT_RUNS` runs are kept, the
least recently advanced dropped first.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Sequence
from typing import Any

from storage.messages import utcnow
from storage.workflow_records import (
    UNCHANGED, NewStep, RunStatus, StepChange, StepStatus, WorkflowRun, WorkflowStep)
from storage.workflow_store import WorkflowStore

ROWS_KEPT_RUNS = 2_000

Rows = dict[tuple[str, int], WorkflowStep]


class RunMemory:
    """Copies of runs (pending or running) and of their step rows."""

    def __init__(self) -> None:
        self.runs: dict[str, WorkflowRun] = {}
        self._rows: collections.OrderedDict[str, Rows] = collections.OrderedDict()

    async def run(self, store: WorkflowStore, tenant: str, run_id: str) -> WorkflowRun:
        """The run, from memory when kept, else from storage (`NotFound` for another
        tenant's, as the store says)."""
        run = self.runs.get(run_id)
        if run is None or run.tenant != tenant:
            run = await store.run(tenant, run_id)
            if run.status in (RunStatus.PENDING, RunStatus.RUNNING):
                self.runs[run_id] = run
        return run

    async def rows(self, store: WorkflowStore, tenant: str, run_id: str) -> Rows:
        """The run's step rows by (step id, item)."""
        rows = self._rows.get(run_id)
        if rows is None:
            rows = {(s.step_id, s.map_index): s for s in await store.steps(tenant, run_id)}
            self._rows[run_id] = rows
            while len(self._rows) > ROWS_KEPT_RUNS:
                self._rows.popitem(last=False)
        else:
            self._rows.move_to_end(run_id)
        return rows

    def remember(self, run_id: str, applied: Sequence[StepChange],
                 new_steps: Sequence[NewStep]) -> None:
        """Apply to the kept rows what the store just applied (nothing when none are kept)."""
        rows = self._rows.get(run_id)
        if rows is None:
            return
        now = utcnow()
        for new in new_steps:
            rows.setdefault((new.step_id, new.map_index), WorkflowStep(
                run_id, new.step_id, new.map_index, StepStatus(new.status), None, None, None,
                None, None, None, None, new.wake_at, now))
        for change in applied:
            key = (change.step_id, change.map_index)
            values: dict[str, Any] = {"status": StepStatus(change.status), "updated_at": now}
            for field in ("task_id", "output", "error", "wake_at"):
                if getattr(change, field) is not UNCHANGED:
                    values[field] = getattr(change, field)
            rows[key] = dataclasses.replace(rows[key], **values)

    def forget(self, run_id: str) -> None:
        """Drop what is kept of the run: the next read comes from storage."""
        self._rows.pop(run_id, None)
        self.runs.pop(run_id, None)
